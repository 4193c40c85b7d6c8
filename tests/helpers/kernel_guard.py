"""Skip guard: pytest hooks, re-exported by tests/conftest.py.

A test that needs something the machine may lack carries a mark naming it
(registered in pyproject.toml):

- ``kernel``: a live kernel (root, BTF, tracefs, BPF load);
- ``needs_rotel``: the test collector, rotel (installed by the set-up);
- ``needs_yaml``: PyYAML (a test dependency);
- ``needs_bcc``: BCC and kernel headers (installed by the set-up);
- ``needs_buildah``: buildah, to build and run the container image
  (scripts/image installs it);
- ``needs_cgroup2``: a mounted cgroup v2 hierarchy;
- ``needs_host_pidns``: the initial pid namespace (kthreadd is pid 2).

and skips itself, the reason naming what is missing, where it cannot run. On
the machine kind CI runs on (root with BTF, after the set-up) a skip hides a
broken test: .ci/run sets OTEL_EXEC_REQUIRE_KERNEL=1 there, and then EVERY
skip fails the run, except that of a test whose mark names a prerequisite
this module itself finds missing (``MACHINE_LACKS``: cgroup v2 and the
initial pid namespace, which a root+BTF machine may truly lack). A test
never skips because the behaviour it checks is broken; it fails.

Skip per test (skipif marker, fixture, or pytest.skip() in the test), not
with a module-level pytest.skip(): a module skipped while it is imported has
no test items to inspect, so under the variable it fails the session.
"""
from __future__ import annotations

import os as _os
from pathlib import Path as _Path
from typing import Callable as _Callable

import pytest as _pytest

_REQUIRE_ENV = "OTEL_EXEC_REQUIRE_KERNEL"
_SKIP_MSG = "skipped on a root+BTF machine (OTEL_EXEC_REQUIRE_KERNEL=1): "

PREREQUISITE_MARKS = ("kernel", "needs_rotel", "needs_yaml", "needs_bcc", "needs_buildah", "needs_cgroup2",
                      "needs_host_pidns")


def _lacks_cgroup2() -> str | None:
    from otel_exec.host.cgroups import cgroup2_root
    return None if cgroup2_root() else "no cgroup v2 hierarchy mounted"


def _lacks_host_pidns() -> str | None:
    try:
        comm = _Path("/proc/2/comm").read_text().strip()
    except OSError:
        comm = ""
    return None if comm == "kthreadd" else "not in the initial pid namespace (pid 2 is not kthreadd)"


# mark -> why this machine lacks it (None: it has it). A mark not here names
# something a root+BTF machine always has after the set-up.
MACHINE_LACKS: dict[str, _Callable[[], str | None]] = {
    "needs_cgroup2": _lacks_cgroup2,
    "needs_host_pidns": _lacks_host_pidns,
}


def _required() -> bool:
    return _os.environ.get(_REQUIRE_ENV, "") not in ("", "0")


def _skip_reason(longrepr) -> str:
    # A skip report's longrepr is (path, lineno, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def _allowed_skip(item) -> bool:
    """The item's mark names a prerequisite this machine truly lacks."""
    return any(item.get_closest_marker(mark) is not None and check() is not None
               for mark, check in MACHINE_LACKS.items())


@_pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _required():
        return
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return  # not a skip, or an xfail (reported as skipped): leave it
    if _allowed_skip(item):
        return
    marks = [m for m in PREREQUISITE_MARKS if item.get_closest_marker(m) is not None]
    report.outcome = "failed"
    report.longrepr = (_SKIP_MSG + _skip_reason(report.longrepr)
                       + ("" if marks else " (and the test has no prerequisite mark)"))


_skipped_modules: list[str] = []


@_pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module skipped at import: it stays skipped (so the rest of the suite
    # still runs) but the session fails.
    outcome = yield
    if not _required():
        return
    report = outcome.get_result()
    if report.skipped and isinstance(collector, _pytest.Module):
        _skipped_modules.append(f"{report.nodeid}: {_skip_reason(report.longrepr)}")


def pytest_terminal_summary(terminalreporter):
    for entry in _skipped_modules:
        terminalreporter.write_line(f"FAILED {_SKIP_MSG}(whole module) {entry}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _skipped_modules and exitstatus in (
        _pytest.ExitCode.OK, _pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        session.exitstatus = _pytest.ExitCode.TESTS_FAILED
