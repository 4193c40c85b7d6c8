"""The cost knobs, through the real kernel path: the --path-prefix and
--cgroup filters, --sample-rate with its always-keep options, and --no-field.

Each test runs its own agent with the knob and execs copies of small
programs under its own temporary directory, so that it can tell its execs
(by cmdpath, which every setting still collects) from everything else the
machine runs; the filters are also checked against every exec the agent
reported, not only the test's own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agent_run import AgentRun, Live, agent, counters_from, kernel_available, marked, marked_env, new_cgroup, new_mark  # noqa: F401
from tests.helpers.collector import Collector
from testkit.exe_reference import IDENTITY_FIELDS, same_identity
from otel_exec.bcc import toolchain
from otel_exec import cli
from otel_exec.core import probes
from otel_exec.config import FIELD_GROUPS
from otel_exec.model.events import ExecEvent
from tests.helpers.progs import Progs
from tests.helpers.bcc_env import bcc_env  # noqa: F401
from tests.helpers.proc_truth import assert_live_process
from testkit.environment import environment, variable

pytestmark = pytest.mark.kernel

SLEEP = shutil.which("sleep") or "/usr/bin/sleep"
# Both agents convert the kernel's boot clock with their own sample of it.
CLOCK_SLACK_NS = 20_000_000


@pytest.fixture
def need_kernel() -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)


def copy_of(src: str, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return str(dst)


def stop_clean(run: AgentRun) -> dict[str, int]:
    rc, err = run.stop()
    assert rc == 0, err
    assert "WARNING" not in err, err
    return counters_from(err)


def test_path_prefix_filter_keeps_exactly_the_matching_execs(need_kernel: None, progs: Progs,
                                                             tmp_path: Path) -> None:
    """--path-prefix PREFIX keeps an exec whose cmdpath (as exec'd) or
    resolved executable path starts with PREFIX, as strings."""
    tmp_path.chmod(0o755)
    bindir = tmp_path / "bin"
    keep = copy_of(progs.dyn_true, bindir / "oe-keep")
    drop = copy_of(progs.dyn_true, bindir / "oe-drop")
    prefix = str(bindir / "oe-k")
    (tmp_path / "elsewhere").mkdir()
    into = tmp_path / "elsewhere" / "link-into-prefix"  # cmdpath outside, resolved path inside
    into.symlink_to(keep)
    out_of = bindir / "oe-klink"  # cmdpath inside, resolved path outside
    out_of.symlink_to(drop)
    run = AgentRun(tmp_path / "agent", "--path-prefix", prefix, "--path-prefix", "/nonexistent/")
    for argv, cwd in (([keep], None), ([drop], None), ([str(into)], None), ([str(out_of)], None),
                      (["./oe-keep"], bindir), (["./oe-drop"], bindir), (["/bin/true"], None)):
        subprocess.run(argv, cwd=cwd, check=True)
    time.sleep(0.3)
    counters = stop_clean(run)
    events = run.events
    # Everything the agent reported, from the whole machine, matches.
    assert all(e["cmdpath"].startswith(prefix) or e["pathname"].startswith(prefix) for e in events), \
        [(e["cmdpath"], e["pathname"]) for e in events if not e["cmdpath"].startswith(prefix)]
    ours = sorted((e["cmdpath"], e["pathname"]) for e in events if e["cmdpath"].startswith((str(tmp_path), "./")))
    assert ours == sorted([(keep, keep), (str(into), keep), (str(out_of), drop), ("./oe-keep", keep)])
    assert counters["exec_filtered"] >= 3  # oe-drop twice, /bin/true


@pytest.fixture
def cgroups(need_kernel: None) -> Iterator[tuple[Path, Path]]:
    """A fresh cgroup v2 under the root and one below it; removed after."""
    with new_cgroup(f"oe-knobs-{new_mark()[:12]}", "sub") as sub:
        yield sub.parent, sub


def test_cgroup_filter_keeps_the_cgroup_and_below(cgroups: tuple[Path, Path], progs: Progs,
                                                  tmp_path: Path) -> None:
    top, sub = cgroups
    tmp_path.chmod(0o755)
    inside = copy_of(progs.dyn_true, tmp_path / "oe-in")
    below = copy_of(progs.dyn_true, tmp_path / "oe-below")
    outside = copy_of(progs.dyn_true, tmp_path / "oe-out")
    name = "/" + top.name
    run = AgentRun(tmp_path / "agent", "--cgroup", name)
    # The shell moves itself, then execs: the shell's own exec happened
    # outside, the program's inside.
    subprocess.run(["/bin/sh", "-c", f"echo $$ > {top}/cgroup.procs && exec {inside}"], check=True)
    subprocess.run(["/bin/sh", "-c", f"echo $$ > {sub}/cgroup.procs && exec {below}"], check=True)
    subprocess.run([outside], check=True)
    time.sleep(0.3)
    counters = stop_clean(run)
    assert all(e["cgroup_path"] == name or e["cgroup_path"].startswith(name + "/") for e in run.events)
    ours = {e["cmdpath"]: e for e in run.events if e["cmdpath"].startswith(str(tmp_path))}
    assert set(ours) == {inside, below}
    assert ours[inside]["cgroup_path"] == name and ours[below]["cgroup_path"] == f"{name}/sub"
    assert ours[inside]["cgroup_id"] == top.stat().st_ino and ours[below]["cgroup_id"] == sub.stat().st_ino
    assert counters["exec_filtered"] >= 3  # two shells and oe-out


def test_the_start_takes_the_cgroups_validate_resolved(need_kernel: None) -> None:
    """--cgroup is resolved once, by Config.validate (a cgroup that does not
    exist is refused before anything loads): the kernel filter's ids and
    the selection of the processes running at start are those cgroups, in
    the hierarchy's form whatever form was given, even when the directory
    is gone by the time the agent is made."""
    from otel_exec.agent import Agent
    from otel_exec.config import Config
    from otel_exec.errors import UsageError
    from otel_exec.host.cgroups import cgroup2_root, resolve
    from otel_exec.host.identity import HostIdentity

    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    made = Path(root, f"oe-once-{new_mark()[:12]}")
    made.mkdir()
    try:
        cfg = Config(cgroup=[str(made)])  # the directory under the cgroup2 mount
        cfg.validate()
        inode = made.stat().st_ino
    finally:
        made.rmdir()
    with pytest.raises(UsageError, match="no such cgroup"):
        resolve(str(made))
    assert [(c.path, c.id, c.level) for c in cfg.cgroups()] == [(f"/{made.name}", inode, 1)]
    assert Agent(cfg, [], HostIdentity.current()).selection.cgroup_dirs == (f"/{made.name}/",)


STORM = 400


def test_sample_rate_keeps_one_in_n_and_every_always_kept_exec(need_kernel: None, progs: Progs, tmp_path: Path,
                                                               collector: Collector) -> None:
    tmp_path.chmod(0o755)
    sampled = copy_of(progs.dyn_true, tmp_path / "oe-sampled")
    by_comm = copy_of(progs.dyn_true, tmp_path / "oe-keep-comm")
    by_uid = copy_of(progs.dyn_true, tmp_path / "oe-keep-uid")
    by_path = copy_of(progs.dyn_true, tmp_path / "keep" / "oe-keep-path")
    (tmp_path / "keep").chmod(0o755)
    run = AgentRun(tmp_path / "agent", "--sample-rate", "4", "--keep-comm", "oe-keep-comm",
                   "--keep-uid", "65534", "--keep-path-prefix", str(tmp_path / "keep") + "/",
                   "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                   env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200"))
    mark = new_mark()
    env = marked_env(mark)
    loop = f"i=0; while [ $i -lt {STORM} ]; do {sampled}; i=$((i+1)); done"
    subprocess.run(["/bin/sh", "-c", loop], env=env, check=True)
    for _ in range(20):
        subprocess.run([by_comm], env=env, check=True)
        subprocess.run([by_path], env=env, check=True)
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", by_uid], env=env, check=True)
    time.sleep(0.3)
    counters = stop_clean(run)
    events = [e for e in run.events if marked(mark)(e)]
    kept = [e for e in events if e["cmdpath"] == sampled]
    # 1 in 4 of 400: about 100, and outside [40, 200] with a chance below 1e-9.
    assert 40 <= len(kept) <= 200, len(kept)
    assert {e["sample_rate"] for e in kept} == {4}
    assert counters["exec_sampled_out"] >= STORM - len(kept)
    for program in (by_comm, by_path, by_uid):
        always = [e for e in events if e["cmdpath"] == program]
        assert len(always) == 20, program
        assert {e["sample_rate"] for e in always} == {1}, program
    # The rate is on the OTLP records too.
    logs = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark,
                                   count=len(events), timeout=15)
    assert len(logs) == len(events)
    rates = {r.attributes["otel_exec.cmdpath"]: set() for r in logs}
    for r in logs:
        rates[r.attributes["otel_exec.cmdpath"]].add(r.attributes["otel_exec.sample_rate"])
    assert rates[sampled] == {4}
    assert rates[by_comm] == rates[by_path] == rates[by_uid] == {1}


@pytest.mark.parametrize("unreported_by", [
    ["--sample-rate", "4294967295", "--keep-comm", "sh", "--keep-comm", "oe-child"],
    ["--exclude-comm", "oe-hidden"],
])
def test_a_reexec_that_is_not_reported_ends_the_previous_span(need_kernel: None, progs: Progs, tmp_path: Path,
                                                              collector: Collector,
                                                              unreported_by: list[str]) -> None:
    """sh re-execs into an image that is sampled out (or filtered out),
    which runs a child and exits 3. sh's span ends at that exec, not with
    the unreported image's exit; the child, whose image parent is
    unreported, starts a trace of its own."""
    tmp_path.chmod(0o755)
    hidden = copy_of(os.path.realpath("/bin/sh"), tmp_path / "oe-hidden")
    child = copy_of(progs.dyn_true, tmp_path / "oe-child")
    run = AgentRun(tmp_path / "agent", "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                   *unreported_by, env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200",
                                            OTEL_BSP_SCHEDULE_DELAY="200"))
    mark = new_mark()
    t0 = time.time_ns()
    done = subprocess.run(["/bin/sh", "-c", f"exec {hidden} -c '{child}; exit 3'"], env=marked_env(mark),
                          check=False)
    assert done.returncode == 3
    counters = stop_clean(run)
    assert counters["exec_sampled_out"] + counters["exec_filtered"] >= 1
    events = [e for e in run.events if marked(mark)(e)]
    assert sorted(e["comm"] for e in events) == ["oe-child", "sh"]
    (sh,) = [e for e in events if e["comm"] == "sh"]
    (kid,) = [e for e in events if e["comm"] == "oe-child"]
    assert kid["image_ppid"] == sh["host_pid"]  # the same process, in its unreported image
    spans = {s.attributes["process.pid"]: s for s in collector.wait_for_spans(
        lambda s: s.attributes.get("otel_exec.exec_id") in (sh["exec_id"], kid["exec_id"]), count=2, timeout=15)}
    sh_span, kid_span = spans[sh["host_pid"]], spans[kid["host_pid"]]
    assert sh_span.attributes["otel_exec.span.ended_by"] == "exec"
    assert "process.exit.code" not in sh_span.attributes and "otel_exec.span.incomplete" not in sh_span.attributes
    assert t0 <= sh_span.end_time < kid_span.start_time
    assert kid_span.parent_span_id == "" and kid_span.trace_id != sh_span.trace_id
    assert kid_span.attributes["process.exit.code"] == 0


def _live_event(run: AgentRun, pid: int) -> dict:
    return run.one(lambda e: e["host_pid"] == pid and e["comm"] == "oe-fields")


@pytest.mark.parametrize("group", list(FIELD_GROUPS))
def test_no_field_leaves_out_exactly_its_fields(agent: AgentRun, progs: Progs, tmp_path: Path, group: str) -> None:
    """The same exec, seen by the session's agent (everything collected,
    checked against /proc) and by one with --no-field GROUP: the fields of
    GROUP are missing and named in `unavailable`, all others are equal."""
    program = copy_of(SLEEP, tmp_path / "oe-fields")
    run = AgentRun(tmp_path / "agent", "--no-field", group)
    mark = new_mark()
    with open(__file__, "rb") as stdin, Live([program, "30"], mark, cwd=tmp_path, stdin=stdin) as p:
        full = _live_event(agent, p.pid)
        assert_live_process(full, p.pid)
        part = _live_event(run, p.pid)
    stop_clean(run)
    gone = FIELD_GROUPS[group]
    assert part["unavailable"] == [f for f in full if f in gone] and full["unavailable"] == []
    assert set(part) == set(full) - set(gone)
    for key, value in part.items():
        if key in ("timestamp", "process_start_time"):
            assert abs(value - full[key]) < CLOCK_SLACK_NS
        elif key in IDENTITY_FIELDS:
            assert same_identity(value, full[key]), key
        elif key != "unavailable":
            assert value == full[key], key
    if group == "paths":
        assert part["interpreter_inode"] != 0  # the identity without the path
    if group == "argv":
        assert part["argc"] == 2  # the kernel's count needs no read


def test_no_field_on_otlp_records_and_spans(need_kernel: None, progs: Progs, tmp_path: Path,
                                            collector: Collector) -> None:
    program = copy_of(progs.dyn_true, tmp_path / "oe-nofield")
    run = AgentRun(tmp_path / "agent", "--no-field", ",".join(FIELD_GROUPS), "--exporter", "otlp",
                   "--endpoint", collector.grpc_endpoint,
                   env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200"))
    subprocess.run([program, "--password=x"], env=marked_env(new_mark(), SECRET="s"), check=True)
    (rec,) = collector.wait_for_logs(lambda r: r.attributes.get("otel_exec.cmdpath") == program, timeout=15)
    (span,) = collector.wait_for_spans(lambda s: s.span_id == rec.span_id, timeout=15)
    stop_clean(run)
    a = rec.attributes
    for gone in ("process.executable.path", "process.executable.name", "file.path", "process.command",
                 "process.command_args", "otel_exec.argv_truncated", "otel_exec.env_truncated",
                 "otel_exec.interpreter.path", "otel_exec.interpreter.inode", "otel_exec.stdin.type",
                 "otel_exec.stdin.path", "process.interactive", "process.working_directory", "process.linux.cgroup",
                 "container.id"):
        assert gone not in a, gone
    assert not environment(a) and "otel_exec.env.rest" not in a
    every = {name for names in FIELD_GROUPS.values() for name in names}
    assert a["otel_exec.unavailable"] == [name for name in ExecEvent.__slots__ if name in every]
    st = os.stat(program)
    assert (a["file.inode"], a["process.args_count"], a["otel_exec.env_count"]) == (str(st.st_ino), 2, 3)
    assert rec.body is None  # the command line is argv
    assert span.name == "oe-nofield"  # named by comm without the path
    assert span.attributes["process.exit.code"] == 0


def test_auto_backend_refuses_options_bcc_lacks(need_kernel: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Without BTF, auto picks BCC: options it cannot honour stop the agent
    before BCC compiles anything, never silently ignored."""
    monkeypatch.setattr(probes, "VMLINUX_BTF", tmp_path / "no-btf")
    monkeypatch.setattr(toolchain, "bcc_problem", lambda: None)
    assert cli.main(["run", "--no-field", "paths", "--duration", "1", "--no-spool"]) == 2
    err = capsys.readouterr().err
    assert "--no-field: not supported by the BCC backend (--backend auto chose it" in err


def test_bcc_backend_filters_by_cgroup_and_path_prefix(cgroups: tuple[Path, Path], progs: Progs, tmp_path: Path,
                                                       bcc_env: dict[str, str]) -> None:
    """The BCC program filters by cgroup in the kernel; --path-prefix is
    decided in user space there (it cannot read bprm->file)."""
    top, sub = cgroups
    tmp_path.chmod(0o755)
    inside = copy_of(progs.dyn_true, tmp_path / "oe-in")
    below = copy_of(progs.dyn_true, tmp_path / "oe-below")
    outside = copy_of(progs.dyn_true, tmp_path / "oe-out")
    name = "/" + top.name
    run = AgentRun(tmp_path / "agent", "--backend", "bcc", "--cgroup", name, "--path-prefix",
                   str(tmp_path / "oe-"), env=bcc_env)
    subprocess.run(["/bin/sh", "-c", f"echo $$ > {top}/cgroup.procs && {inside} && /bin/true"], check=True)
    subprocess.run(["/bin/sh", "-c", f"echo $$ > {sub}/cgroup.procs && exec {below}"], check=True)
    subprocess.run([outside], check=True)
    time.sleep(0.5)
    counters = stop_clean(run)
    assert all(e["cgroup_id"] in (top.stat().st_ino, sub.stat().st_ino) for e in run.events)
    assert sorted(e["cmdpath"] for e in run.events if e["cmdpath"].startswith(str(tmp_path))) == sorted([inside, below])
    assert counters["exec_filtered"] >= 4  # two shells and oe-out by cgroup, /bin/true by path
