"""The BCC backend against the CO-RE backend, over the same execs.

Two agents run side by side (tests/helpers/agent_run.py): the default CO-RE one and
one with --backend bcc. Each scenario execs real programs; for each exec,
every field the BCC event reports must equal the CO-RE event's, and every
field it names in `unavailable` must hold its placeholder ("" / 0 / [] /
None / False), never a value. Scenarios that keep the process alive also
check that the /proc-verified fields did arrive, so the comparison is not
vacuous.

This machine has no kernel headers for its own kernel: the set-up installs
BCC and the distribution's nearest headers (idempotently) and points
BCC_KERNEL_SOURCE at them (otel_exec.bcc.toolchain.prepare_headers). That is
only sound because bpf/otel_exec_bcc.c reads no kernel struct layout; these
comparisons with the CO-RE backend, which reads the real layouts through
BTF, are what shows it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.helpers.agent_run import (AgentRun, Live, marked, marked_env, new_cgroup, new_mark,
                                     STOP_SIGNAL_IDS, STOP_SIGNALS, stopped_while_waiting)
from otel_exec.bcc import toolchain
from otel_exec import cli
from otel_exec.core import probes
from otel_exec import sources
from otel_exec.host import privileges, tracefs
from otel_exec.config import Config
from otel_exec.export.console import EXEC_FIELDS
from otel_exec.errors import BccError, NoBtfError, TracefsError
from testkit.exe_reference import IDENTITY_FIELDS, same_identity
from tests.helpers.progs import Progs, popen_with_fd3
from tests.helpers.bcc_env import bcc_env  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.kernel, pytest.mark.needs_bcc]

SLEEP = shutil.which("sleep") or "/usr/bin/sleep"
# The fields of a JSONL exec line (otel_exec.export.console), but the list of unavailable ones.
FIELDS = [name for name in EXEC_FIELDS if name != "unavailable"]
# The two agents' programs run one after the other on the same tracepoint,
# and each converts boot time to the epoch with its own sample.
TIMESTAMP_SLACK_NS = 20_000_000
# Verified from /proc whenever the process is alive when the BCC agent
# handles its exec (the scenarios that keep it alive check these arrived).
PROC_FIELDS = ["pathname", "dev", "inode", "ctime", "inode_mode", "interpreter_pathname", "interpreter_dev",
               "interpreter_inode", "interpreter_ctime", "stdin_type", "stdin_path", "pwd", "euid", "egid",
               "mount_ns", "hostname", "exec_id", "start_ticks"]
KERNEL_FIELDS = ["timestamp", "host_pid", "host_tid", "uid", "gid", "comm", "prev_comm", "cgroup_id", "cmdpath",
                 "interp", "env", "envc", "cgroup_path", "container_id"]


# --- set-up: BCC and headers ----------------------------------------------------



@dataclass
class Pair:
    core: AgentRun
    bcc: AgentRun


def _stop(run: AgentRun, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """run.stop(), and a kill if it does not stop: never leave an agent behind."""
    try:
        return run.stop(sig)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.wait()
        return -9, run.err.read_text() + "\n(killed: it did not stop)"


def _stop_clean(run: AgentRun) -> str:
    rc, err = _stop(run)
    assert rc == 0, err
    assert "WARNING" not in err, err
    return err


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory, bcc_env: dict[str, str]) -> Iterator[Pair]:
    core = AgentRun(tmp_path_factory.mktemp("core"))
    try:
        bcc = AgentRun(tmp_path_factory.mktemp("bcc"), "--backend", "bcc", env=bcc_env)
    except BaseException:
        _stop(core)
        raise
    try:
        yield Pair(core, bcc)
    finally:
        core_rc, core_err = _stop(core)
        bcc_rc, err = _stop(bcc)
    assert core_rc == 0, core_err
    assert bcc_rc == 0, err
    assert "WARNING" not in err, err
    counters = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", err.splitlines()[-1])}
    assert counters["decode_errors"] == 0
    assert all(v == 0 for k, v in counters.items() if k.startswith("lost_")), counters


# --- comparison ---------------------------------------------------------------

PLACEHOLDER = {"container_id": None, "invoked_from_kernel": False, "argv_truncated": False,
               "env_truncated": False, "executable_identity": None, "script_identity": None}


def placeholder(field: str, value: object) -> object:
    if field in PLACEHOLDER:
        return PLACEHOLDER[field]
    return {str: "", int: 0, list: []}[type(value)]


def compare(core: dict, bcc: dict) -> None:
    """Every field BCC reports equals CO-RE's; every one it could not
    verify is named in `unavailable` and holds its placeholder."""
    assert set(bcc) == set(core) == set(FIELDS) | {"unavailable"}
    assert core["unavailable"] == []
    unavailable = bcc["unavailable"]
    assert set(unavailable) <= set(FIELDS), unavailable
    assert "process_start_time" in unavailable  # /proc has clock ticks only: never reported
    wrong = {}
    for field in FIELDS:
        if field in unavailable:
            if bcc[field] != placeholder(field, core[field]):
                wrong[field] = ("unavailable but", bcc[field])
        elif field == "timestamp":
            if abs(bcc[field] - core[field]) > TIMESTAMP_SLACK_NS:
                wrong[field] = (core[field], bcc[field])
        elif field in IDENTITY_FIELDS:
            if not same_identity(core[field], bcc[field]):
                wrong[field] = (core[field], bcc[field])
        elif bcc[field] != core[field]:
            wrong[field] = (core[field], bcc[field])
    assert not wrong, f"BCC differs from CO-RE (core, bcc): {wrong}\ncore: {core}\nbcc: {bcc}"


def pair(agents: Pair, pred: Callable[[dict], bool], timeout: float = 15) -> tuple[dict, dict]:
    core = agents.core.one(pred, timeout)
    same = (lambda e: e["host_pid"] == core["host_pid"] and e["cmdpath"] == core["cmdpath"]
            and abs(e["timestamp"] - core["timestamp"]) < 10**9)
    bcc = agents.bcc.one(same, timeout)
    compare(core, bcc)
    return core, bcc


def available(bcc: dict, fields: list[str]) -> None:
    missing = [f for f in fields if f in bcc["unavailable"]]
    assert not missing, f"expected from the BCC backend: {missing}; event: {bcc}"


# --- scenarios ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["relative", "symlink"])
def test_dynamic_elf_alive(agents: Pair, tmp_path: Path, how: str) -> None:
    mark = new_mark()
    if how == "relative":
        shutil.copy2(SLEEP, tmp_path / "sleep-copy")
        cmd = "./sleep-copy"
    else:
        os.symlink(SLEEP, tmp_path / "link-to-sleep")
        cmd = str(tmp_path / "link-to-sleep")
    with Live([cmd, "30"], mark, cwd=tmp_path):
        _, bcc = pair(agents, marked(mark))
    available(bcc, PROC_FIELDS + KERNEL_FIELDS + ["argv", "argc", "pid", "tid", "ppid", "host_ppid", "pid_ns",
                                                  "invoked_from_kernel"])
    # The parent (pytest) started before the agents: whether it is itself a
    # forked copy cannot be known without task_struct.
    assert {"image_ppid", "parent_exec_id"} <= set(bcc["unavailable"])


def test_short_lived(agents: Pair, progs: Progs) -> None:
    mark = new_mark()
    for binary in (progs.dyn_true, progs.static_true, "/bin/true"):
        subprocess.run([binary, "a b", ""], env=marked_env(mark, SOME_TOKEN="s3cr3t"), check=True)
        _, bcc = pair(agents, lambda e, binary=binary: marked(mark)(e) and e["cmdpath"] == binary)
        # From the kernel records, whether or not the process still lives.
        available(bcc, KERNEL_FIELDS + ["argv", "argc", "host_ppid", "pid", "tid", "ppid", "pid_ns"])
        assert "SOME_TOKEN=[REDACTED]" in bcc["env"]


def test_scripts(agents: Pair, tmp_path: Path) -> None:
    inner = tmp_path / "inner.sh"
    inner.write_text(f"#!/bin/sh\n{SLEEP} \"$@\"\n")
    outer = tmp_path / "outer.sh"
    outer.write_text(f"#!{inner}\n")
    quick = tmp_path / "quick.sh"
    quick.write_text("#!/bin/sh\nexit 0\n")
    for p in (inner, outer, quick):
        p.chmod(0o755)
    for script in (inner, outer):
        mark = new_mark()
        with Live([str(script), "30"], mark):
            _, bcc = pair(agents, lambda e, mark=mark, script=script: marked(mark)(e) and e["cmdpath"] == str(script))
        # Alive: the kernel's #! rewrite of argv is read from /proc and
        # checked against the argv passed to execve.
        available(bcc, PROC_FIELDS + KERNEL_FIELDS + ["argv", "argc"])
    mark = new_mark()
    subprocess.run([str(quick), "x"], env=marked_env(mark), check=True)
    _, bcc = pair(agents, lambda e: marked(mark)(e) and e["cmdpath"] == str(quick))
    available(bcc, ["interp"])  # from sched_prepare_exec (6.10+), which this kernel has


def test_argv_edge_cases(agents: Pair, progs: Progs) -> None:
    cases = [
        [progs.exec_argv, progs.print_argv, "pa", "x", ""],  # empty last argument
        [progs.exec_argv, "--argc0", progs.print_argv],  # argc == 0
    ]
    for argv in cases:
        mark = new_mark()
        subprocess.run(argv, env=marked_env(mark), check=True, capture_output=True)
        _, bcc = pair(agents, lambda e, mark=mark: marked(mark)(e) and e["comm"] == "print_argv")
        available(bcc, ["argv", "argc", "env", "envc"])


def test_argv_and_env_beyond_the_bound(agents: Pair, progs: Progs) -> None:
    mark = new_mark()
    argv = [progs.print_argv] + [f"{i:04d}" + "a" * 3000 for i in range(15)]
    env = marked_env(mark, **{f"BIG_{i:02d}": "e" * 3000 for i in range(15)})
    subprocess.run(argv, env=env, check=True, capture_output=True)
    _, bcc = pair(agents, marked(mark))
    available(bcc, ["argv", "argc", "argv_truncated", "env", "envc", "env_truncated"])
    assert bcc["argv_truncated"] and bcc["env_truncated"]


def test_non_utf8_path_and_argv(agents: Pair, progs: Progs, tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/oe-\xff\xfe-\xc3(-sleep"
    shutil.copy2(SLEEP, name)
    mark = new_mark()
    with Live([name, b"30"], mark):
        _, bcc = pair(agents, marked(mark))
    available(bcc, PROC_FIELDS + ["argv"])
    assert "\\xff\\xfe" in bcc["pathname"]
    mark = new_mark()
    subprocess.run([progs.dyn_true, b"x\xffy", "ok"], env=marked_env(mark), check=True)
    _, bcc = pair(agents, marked(mark))
    available(bcc, ["argv"])
    assert bcc["argv"][1] == "x\\xffy"


@pytest.mark.parametrize("kind", ["file", "pipe", "devnull", "pty"])
def test_stdin(agents: Pair, tmp_path: Path, kind: str) -> None:
    f = tmp_path / "input.txt"
    f.write_text("hello\n")
    master, slave = os.openpty()
    r, w = os.pipe()
    opened = open(f, "rb")
    stdin = {"file": opened, "pipe": r, "devnull": subprocess.DEVNULL, "pty": slave}[kind]
    mark = new_mark()
    try:
        with Live([SLEEP, "30"], mark, stdin=stdin):
            _, bcc = pair(agents, marked(mark))
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)
        opened.close()
    available(bcc, ["stdin_type", "stdin_path"])


def test_lineage_under_a_shell_started_meanwhile(agents: Pair) -> None:
    """image_ppid and parent_exec_id come when the parent's image began while
    the agent ran: a shell that forks a child, and a subshell's children."""
    mark = new_mark()
    with Live(["/bin/sh", "-c", f"{SLEEP} 0.5; ( {SLEEP} 30; true ); true"], mark):
        _, first = pair(agents, lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "0.5"])
        _, sub = pair(agents, lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
    for bcc in (first, sub):
        available(bcc, ["image_ppid", "parent_exec_id", "host_ppid", "invoked_from_kernel"])
    assert sub["image_ppid"] != sub["host_ppid"]  # the subshell is a forked copy of the shell


def test_exec_from_non_leader_thread(agents: Pair, progs: Progs) -> None:
    mark = new_mark()
    proc, rfd = popen_with_fd3([progs.thread_exec, SLEEP, "30"], env=marked_env(mark), stdin=subprocess.DEVNULL)
    try:
        with os.fdopen(rfd, "rb") as r:
            r.read()
        _, bcc = pair(agents, lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
    finally:
        proc.kill()
        proc.wait()
    available(bcc, PROC_FIELDS + ["argv", "prev_comm"])


def test_new_pid_and_mount_namespace(agents: Pair) -> None:
    mark = new_mark()
    with Live([shutil.which("unshare"), "--pid", "--mount", "--fork", SLEEP, "30"], mark):
        core, bcc = pair(agents, lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
    assert (core["pid"], core["ppid"]) == (1, 0)
    available(bcc, PROC_FIELDS + ["pid", "tid", "ppid", "pid_ns"])


def test_memfd_and_unlinked_execs(agents: Pair, progs: Progs, tmp_path: Path) -> None:
    mark = new_mark()
    with Live([progs.memfd_exec, SLEEP, "30"], mark):
        _, bcc = pair(agents, lambda e: marked(mark)(e) and e["cmdpath"].startswith("/dev/fd/"))
    available(bcc, PROC_FIELDS)
    assert bcc["pathname"] == "/memfd:oe-memfd (deleted)"
    mark = new_mark()
    proc, rfd = popen_with_fd3([progs.execveat_unlinked, SLEEP, str(tmp_path), "sleep", "30"],
                               env=marked_env(mark), stdin=subprocess.DEVNULL)
    try:
        with os.fdopen(rfd, "rb") as r:
            r.read()
        _, bcc = pair(agents, lambda e: marked(mark)(e) and e["cmdpath"].startswith("/dev/fd/"))
    finally:
        proc.kill()
        proc.wait()
    available(bcc, PROC_FIELDS)
    assert bcc["pathname"].endswith(" (deleted)")


def test_setuid_binary(agents: Pair, tmp_path: Path) -> None:
    """A setuid+setgid program kept running until both backends reported it:
    BCC reads euid/egid from /proc/PID/status while it lives, and must not
    leave them unavailable or take the real ids."""
    tmp_path.chmod(0o755)
    binary = tmp_path / "sleep_suid"
    shutil.copy2(SLEEP, binary)
    os.chown(binary, 65534, 65534)
    binary.chmod(0o6755)
    mark = new_mark()
    with Live([str(binary), "30"], mark) as p:
        core, bcc = pair(agents, marked(mark))
        status = Path(f"/proc/{p.pid}/status").read_text()
    available(bcc, ["uid", "gid", "euid", "egid"])
    real_uid, euid = (int(x) for x in re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M).groups())
    real_gid, egid = (int(x) for x in re.search(r"^Gid:\s+(\d+)\s+(\d+)", status, re.M).groups())
    assert (euid, egid) == (65534, 65534) and (real_uid, real_gid) == (os.getuid(), os.getgid())
    for ev in (core, bcc):
        assert (ev["uid"], ev["gid"], ev["euid"], ev["egid"]) == (real_uid, real_gid, euid, egid)


def test_container_cgroup(agents: Pair) -> None:
    cid = "fedcba9876543210" * 4
    mark = new_mark()
    with new_cgroup(f"docker-{cid}.scope") as cg:
        with Live(["/bin/sh", "-c", f"echo $$ > {cg}/cgroup.procs && exec {SLEEP} 30"], mark) as p:
            _, bcc = pair(agents, lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
            p.kill()
            p.wait()
    available(bcc, ["cgroup_path", "container_id"])
    assert bcc["container_id"] == cid


def test_usermode_helper(agents: Pair, progs: Progs, tmp_path: Path) -> None:
    """An exec by the kernel (kernel_execve: no execve syscall, so no
    syscall-time argv) from a kernel thread."""
    tmp_path.chmod(0o755)
    helper = tmp_path / "oe-bcc-core-helper"
    helper.write_text(f"#!/bin/sh\ncat > /dev/null\n{SLEEP} 2\n")
    helper.chmod(0o755)
    pattern = Path("/proc/sys/kernel/core_pattern")
    saved = pattern.read_text()
    try:
        pattern.write_text(f"|{helper} %p")
        subprocess.run([progs.crash], cwd=tmp_path, env=marked_env(new_mark()))
        core = agents.core.one(lambda e: e["cmdpath"] == str(helper), timeout=15)
        bcc = agents.bcc.one(lambda e: e["host_pid"] == core["host_pid"] and e["cmdpath"] == str(helper), 15)
    finally:
        pattern.write_text(saved)
    compare(core, bcc)
    assert core["invoked_from_kernel"] is True
    available(bcc, ["interp", "argv"])  # argv from /proc (it lives 2 s)


def test_storm_every_exec_reported(agents: Pair) -> None:
    mark = new_mark()
    n = 500
    subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"],
                   env=marked_env(mark), check=True)
    true = os.path.realpath("/bin/true")
    core = agents.core.find(lambda e: marked(mark)(e) and e["pathname"] == true, count=n, timeout=30)
    bcc = agents.bcc.find(lambda e: marked(mark)(e) and e["cmdpath"] == "/bin/true", count=n, timeout=30)
    assert len(core) == len(bcc) == n
    by_pid = {e["host_pid"]: e for e in core}
    for e in bcc:
        compare(by_pid[e["host_pid"]], e)


def test_without_prepare_exec_and_group_dead(tmp_path: Path, bcc_env: dict[str, str], agents: Pair) -> None:
    """Older kernels (no sched_prepare_exec, no group_dead): the script
    rewrite and interp come from /proc when the process lives, and are
    marked unavailable when it does not."""
    (tmp_path / "old").mkdir()
    old = AgentRun(tmp_path / "old", "--backend", "bcc",
                   env={**bcc_env, "OTEL_EXEC_BCC_DISABLE": "sched_prepare_exec,group_dead"})
    try:
        script = tmp_path / "s.sh"
        script.write_text(f"#!/bin/sh\n{SLEEP} \"$@\"\n")
        script.chmod(0o755)
        mark = new_mark()
        with Live([str(script), "30"], mark):
            core = agents.core.one(lambda e: marked(mark)(e) and e["cmdpath"] == str(script))
            ev = old.one(lambda e: e["host_pid"] == core["host_pid"] and e["cmdpath"] == str(script))
        compare(core, ev)
        available(ev, ["argv", "interp", "argc"])
        mark = new_mark()
        subprocess.run(["/bin/true", "x"], env=marked_env(mark), check=True)
        core = agents.core.one(lambda e: marked(mark)(e) and e["cmdpath"] == "/bin/true")
        ev = old.one(lambda e: e["host_pid"] == core["host_pid"] and e["cmdpath"] == "/bin/true")
        compare(core, ev)
    finally:
        _stop_clean(old)


# --- errors, selection, tracefs, headers ------------------------------------------

def test_no_btf_and_no_bcc_names_the_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(probes, "VMLINUX_BTF", tmp_path / "no-such-btf")
    monkeypatch.setattr(privileges, "check_can_load_bpf", lambda: None)

    def no_bcc(*_: object) -> None:
        raise ImportError("no python module `bcc` (python3-bpfcc installs it in /usr/lib/python3/dist-packages)")

    monkeypatch.setattr(toolchain, "import_bcc", no_bcc)
    assert cli.main(["run", "--duration", "1"]) == NoBtfError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for needle in ("BTF", "bpfcc-tools", "python3-bpfcc", f"linux-headers-{os.uname().release}", "bcc"):
        assert needle in err
    assert cli.main(["run", "--duration", "1", "--backend", "bcc"]) == BccError.exit_code
    err = capsys.readouterr().err
    assert "python3-bpfcc" in err and err.count("\n") == 1


def test_auto_picks_core_with_btf_and_bcc_without(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   bcc_env: dict[str, str]) -> None:
    assert sources.choose_backend(Config()) == "core"
    monkeypatch.setattr(probes, "VMLINUX_BTF", tmp_path / "no-such-btf")
    if toolchain.KERNEL_SOURCE_ENV in bcc_env:
        monkeypatch.setenv(toolchain.KERNEL_SOURCE_ENV, bcc_env[toolchain.KERNEL_SOURCE_ENV])
    else:
        monkeypatch.delenv(toolchain.KERNEL_SOURCE_ENV, raising=False)
    assert sources.choose_backend(Config()) == "bcc"
    monkeypatch.setenv(toolchain.KERNEL_SOURCE_ENV, str(tmp_path))  # not a header tree
    with pytest.raises(NoBtfError, match="linux-headers-"):
        sources.choose_backend(Config())
    with pytest.raises(BccError, match="kconfig.h"):
        sources.choose_backend(Config(backend="bcc"))


def test_auto_runs_bcc_without_btf(tmp_path: Path, bcc_env: dict[str, str]) -> None:
    """The whole agent, started the way a user would on a kernel without BTF
    (emulated: the BTF path patched in the child process)."""
    code = ("import sys, pathlib; from otel_exec import cli; from otel_exec.core import probes; "
            "probes.VMLINUX_BTF = pathlib.Path('/nonexistent/vmlinux'); "
            "sys.exit(cli.main(sys.argv[1:]))")
    out = tmp_path / "out.jsonl"
    agent = subprocess.Popen([sys.executable, "-c", code, "run", "--duration", "4", "--format", "jsonl",
                              "--output", str(out), "--ready-file", str(tmp_path / "ready")],
                             cwd=Path(__file__).resolve().parents[2], env=bcc_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        mark = new_mark()
        subprocess.run(["ls", "-l", "/"], env=marked_env(mark), stdout=subprocess.DEVNULL, check=True)
        _, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err
    assert "using the BCC backend" in err
    events = [json.loads(line) for line in out.read_text().splitlines()]
    (ls,) = [e for e in events if marked(mark)(e)]
    assert ls["argv"] == ["ls", "-l", "/"]


def test_tracefs_is_found_mounted_or_mounted(tmp_path: Path) -> None:
    assert tracefs.ensure_tracefs() in (tracefs.TRACEFS, tracefs.DEBUGFS_TRACING)
    empty = tmp_path / "tracing"
    empty.mkdir()
    try:
        assert tracefs.ensure_tracefs(str(empty), fallback=None) == str(empty)
        assert (empty / "events" / "sched" / "sched_process_exec").is_dir()
    finally:
        subprocess.run(["umount", str(empty)], check=False)
    full = tmp_path / "not-tracefs"
    full.mkdir()
    (full / "something").write_text("x")
    with pytest.raises(TracefsError, match=f"mount -t tracefs nodev {full}"):
        tracefs.ensure_tracefs(str(full), fallback=None)
    with pytest.raises(TracefsError, match="mount -t tracefs nodev"):
        tracefs.ensure_tracefs(str(tmp_path / "missing"), fallback=None)


def test_prepare_headers_merges_split_trees(tmp_path: Path) -> None:
    src = tmp_path / "src"
    common = src / "linux-headers-6.1.0-9-common"
    flavour = src / "linux-headers-6.1.0-9-amd64"
    for d in (common / "include" / "linux", common / "arch" / "x86" / "include" / "asm",
              flavour / "include" / "generated", flavour / "arch" / "x86" / "include" / "generated"):
        d.mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("/* common */\n")
    (common / "Makefile").write_text("common\n")
    (flavour / "Makefile").write_text(f"include {common}/Makefile\n")
    (flavour / ".config").write_text("CONFIG_X=y\n")
    tree = toolchain.prepare_headers(flavour, cache=tmp_path / "cache")
    assert (tree / "include" / "linux" / "kconfig.h").read_text() == "/* common */\n"
    assert (tree / "include" / "generated").is_dir()
    assert (tree / "arch" / "x86" / "include" / "asm").is_dir()
    assert (tree / "arch" / "x86" / "include" / "generated").is_dir()
    assert (tree / "Makefile").read_text().startswith("include")  # the flavour's wins
    assert (tree / ".config").exists()
    assert toolchain.headers_problem({toolchain.KERNEL_SOURCE_ENV: str(tree)}) is None
    assert toolchain.prepare_headers(flavour, cache=tmp_path / "cache") == tree  # reused


def test_bcc_imports_from_any_python_of_the_version(bcc_env: dict[str, str]) -> None:
    """python3-bpfcc installs for /usr/bin/python3; the agent's interpreter
    (pyenv, a venv) loads it too, without dist-packages on its path."""
    code = ("import sys; from otel_exec.bcc import toolchain; m = toolchain.import_bcc(); "
            "assert '/usr/lib/python3/dist-packages' not in sys.path; print(m.__file__)")
    venv_python = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    for python in {sys.executable, *([str(venv_python)] if venv_python.exists() else [])}:
        out = subprocess.run([python, "-c", code], cwd=Path(__file__).resolve().parents[2],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "bcc/__init__.py" in out.stdout


def test_program_reads_no_kernel_struct() -> None:
    """The BCC program's whole input is tracepoint fields, helpers and user
    memory: no struct of the kernel's is named, no kernel memory is read
    but the tracepoint record (the __data_loc strings)."""
    from otel_exec.bcc.program import program_path

    src = program_path().read_text()
    code = re.sub(r"/\*.*?\*/", "", src, flags=re.DOTALL)
    structs = set(re.findall(r"struct\s+(\w+)", code))
    assert structs <= {"oe_hdr", "oe_args", "oe_prep", "oe_exec", "oe_exit", "oe_discard", "oe_scratch",
                       "oe_proc", "oe_clone", "oe_pending", "oe_comm", "bpf_pidns_info"}, structs
    assert "bpf_get_current_task" not in code and "task_struct" not in code
    for call in re.findall(r"bpf_probe_read_kernel(?:_str)?\(([^;]*)\);", code):
        assert "args" in call, call  # only the tracepoint record itself
    assert "BPF_CORE_READ" not in code and "vmlinux.h" not in code


@pytest.mark.parametrize("sig,other_thread", STOP_SIGNALS, ids=STOP_SIGNAL_IDS)
def test_a_stop_signal_stops_bcc_agent_cleanly_at_once(tmp_path: Path, bcc_env: dict[str, str], sig: int,
                                                       other_thread: bool) -> None:
    err = stopped_while_waiting(tmp_path, sig, "--backend", "bcc", env=bcc_env, other_thread=other_thread)
    assert "exec_seen=" in err
