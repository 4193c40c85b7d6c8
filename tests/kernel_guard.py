"""Kernel-skip guard: pytest hooks, re-exported by tests/conftest.py.

Tests that need a live kernel (root, BTF, tracefs, BPF load) carry
``@pytest.mark.kernel`` and skip themselves where they cannot run. On a
machine where they *can* run, a skip hides a broken test: .ci/run sets
OTEL_EXEC_REQUIRE_KERNEL=1 when it runs as root with /sys/kernel/btf/vmlinux
present, and then every skip of a ``kernel`` test becomes a failure.

Skip kernel tests per test (skipif marker, fixture, or pytest.skip() in the
test), not with a module-level pytest.skip(): a module skipped while it is
imported has no test items to inspect, so the guard can only fail such a
module by spotting "mark.kernel" in its source (see below).
"""
from __future__ import annotations

import os as _os
from pathlib import Path as _Path

import pytest as _pytest

_REQUIRE_KERNEL_ENV = "OTEL_EXEC_REQUIRE_KERNEL"
_KERNEL_SKIP_MSG = "kernel test skipped on a root+BTF machine: "


def _kernel_required() -> bool:
    return _os.environ.get(_REQUIRE_KERNEL_ENV, "") not in ("", "0")


def _skip_reason(longrepr) -> str:
    # A skip report's longrepr is (path, lineno, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


@_pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _kernel_required():
        return
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return  # not a skip, or an xfail (reported as skipped): leave it
    if item.get_closest_marker("kernel") is None:
        return
    report.outcome = "failed"
    report.longrepr = _KERNEL_SKIP_MSG + _skip_reason(report.longrepr)


_skipped_kernel_modules: list[str] = []


@_pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module skipped at import: it stays skipped (so the rest of the suite
    # still runs) but the session fails, if its source uses the kernel mark.
    outcome = yield
    if not _kernel_required():
        return
    report = outcome.get_result()
    if not report.skipped or not isinstance(collector, _pytest.Module):
        return
    try:
        source = _Path(collector.path).read_text(errors="replace")
    except OSError:
        return
    if "mark.kernel" in source:
        _skipped_kernel_modules.append(
            f"{report.nodeid}: {_skip_reason(report.longrepr)}"
        )


def pytest_terminal_summary(terminalreporter):
    for entry in _skipped_kernel_modules:
        terminalreporter.write_line(
            f"FAILED {_KERNEL_SKIP_MSG}(whole module) {entry}", red=True
        )


def pytest_sessionfinish(session, exitstatus):
    if _skipped_kernel_modules and exitstatus in (
        _pytest.ExitCode.OK, _pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        session.exitstatus = _pytest.ExitCode.TESTS_FAILED
