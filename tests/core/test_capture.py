"""Every captured field against ground truth, through the real kernel path.

One agent runs for the session (tests/helpers/agent_run.py); each test execs real
programs with a unique OE_TEST_MARK in their environment and compares the
event with what os.stat, /proc and the test's own setup say.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import AgentRun, Live, agent, marked, marked_env, new_cgroup, new_mark  # noqa: F401
from tests.helpers.proc_truth import IDENTITY, assert_live_process, esc
from tests.helpers.progs import Progs, elf_interp, popen_with_fd3, run_with_fd3

pytestmark = pytest.mark.kernel

SLEEP = shutil.which("sleep") or "/usr/bin/sleep"


def assert_file(ev: dict, prefix: str, path: str) -> None:
    """pathname/dev/inode/ctime (with a field prefix) against os.stat."""
    st = os.stat(path)
    assert ev[f"{prefix}pathname"] == os.path.realpath(path)
    assert ev[f"{prefix}dev"] == st.st_dev
    assert ev[f"{prefix}inode"] == st.st_ino
    assert ev[f"{prefix}ctime"] == st.st_ctime_ns
    if not prefix:
        assert ev["inode_mode"] == st.st_mode


def assert_loader(ev: dict, binary: str) -> None:
    interp = elf_interp(binary)
    if interp is None:
        assert (ev["interpreter_pathname"], ev["interpreter_dev"], ev["interpreter_inode"],
                ev["interpreter_ctime"]) == ("", 0, 0, 0)
    else:
        assert_file(ev, "interpreter_", interp)


def my_comm() -> str:
    return Path("/proc/self/comm").read_text().strip()


def parent_exec_id_of_me() -> str:
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    exe = os.stat("/proc/self/exe")
    return IDENTITY.exec_id(os.getpid(), ticks, exe.st_dev, exe.st_ino)


@pytest.mark.parametrize("how", ["relative", "symlink"])
def test_dynamic_elf(agent: AgentRun, tmp_path: Path, how: str) -> None:
    mark = new_mark()
    if how == "relative":
        shutil.copy2(SLEEP, tmp_path / "sleep-copy")
        cmd, target = "./sleep-copy", str(tmp_path / "sleep-copy")
    else:
        os.symlink(SLEEP, tmp_path / "link-to-sleep")
        cmd, target = str(tmp_path / "link-to-sleep"), SLEEP
    t0 = time.time_ns()
    with Live([cmd, "30"], mark, cwd=tmp_path) as p:
        ev = agent.one(marked(mark))
        assert_live_process(ev, p.pid)
        t1 = time.time_ns()
    assert ev["cmdpath"] == cmd == ev["interp"]
    assert_file(ev, "", target)
    assert_loader(ev, target)
    assert ev["argv"] == [cmd, "30"]
    assert ev["env"] == [f"PATH={marked_env(mark)['PATH']}", f"OE_TEST_MARK={mark}"]
    assert ev["pwd"] == str(tmp_path)
    assert ev["prev_comm"] == my_comm()
    assert ev["parent_exec_id"] == parent_exec_id_of_me()
    assert ev["host_ppid"] == os.getpid()
    assert ev["container_id"] is None
    assert not ev["argv_truncated"] and not ev["env_truncated"]
    assert (ev["argc"], ev["envc"]) == (2, 2)
    assert t0 <= ev["timestamp"] <= t1


def test_static_elf(agent: AgentRun, progs: Progs) -> None:
    mark = new_mark()
    t0 = time.time_ns()
    subprocess.run([progs.static_true, "a b"], env=marked_env(mark), check=True)
    t1 = time.time_ns()
    ev = agent.one(marked(mark))
    assert elf_interp(progs.static_true) is None
    assert_file(ev, "", progs.static_true)
    assert_loader(ev, progs.static_true)
    assert ev["argv"] == [progs.static_true, "a b"]
    assert t0 <= ev["timestamp"] <= t1
    assert t0 - 10**9 // IDENTITY.clk_tck <= ev["process_start_time"] <= ev["timestamp"]


def test_script_and_script_interpreter(agent: AgentRun, tmp_path: Path) -> None:
    inner = tmp_path / "inner.sh"
    inner.write_text("#!/bin/sh\nexit 0\n")
    outer = tmp_path / "outer.sh"
    outer.write_text(f"#!{inner}\n")
    for p in (inner, outer):
        p.chmod(0o755)

    mark = new_mark()
    subprocess.run([str(inner), "x"], env=marked_env(mark), check=True)
    ev = agent.one(marked(mark))
    assert ev["cmdpath"] == str(inner)
    assert ev["interp"] == "/bin/sh"
    assert_file(ev, "", "/bin/sh")  # the binary the kernel finally runs, as Tracee
    assert_loader(ev, os.path.realpath("/bin/sh"))
    assert ev["argv"] == ["/bin/sh", str(inner), "x"]

    mark = new_mark()
    subprocess.run([str(outer), "y"], env=marked_env(mark), check=True)
    ev = agent.one(marked(mark))
    assert ev["cmdpath"] == str(outer)
    assert ev["interp"] == "/bin/sh"  # the innermost interpreter
    assert_file(ev, "", "/bin/sh")
    assert ev["argv"] == ["/bin/sh", str(inner), str(outer), "y"]


def _stdin_cases(tmp_path: Path):
    f = tmp_path / "input.txt"
    f.write_text("hello\n")
    master, slave = os.openpty()
    r, w = os.pipe()
    return {
        "file": open(f, "rb"),
        "pipe": r,
        "devnull": subprocess.DEVNULL,
        "pty": slave,
    }, (master, w)


@pytest.mark.parametrize("kind", ["file", "pipe", "devnull", "pty"])
def test_stdin(agent: AgentRun, tmp_path: Path, kind: str) -> None:
    cases, keep = _stdin_cases(tmp_path)
    mark = new_mark()
    try:
        with Live([SLEEP, "30"], mark, stdin=cases[kind]) as p:
            ev = agent.one(marked(mark))
            assert_live_process(ev, p.pid)
    finally:
        for fd in (*keep, *(v for v in cases.values() if isinstance(v, int) and v > 0)):
            os.close(fd)
        cases["file"].close()
    expected_type = {"file": stat.S_IFREG, "pipe": stat.S_IFIFO, "devnull": stat.S_IFCHR, "pty": stat.S_IFCHR}
    assert ev["stdin_type"] == expected_type[kind]
    if kind == "file":
        assert ev["stdin_path"] == str(tmp_path / "input.txt")
    elif kind == "pipe":
        assert ev["stdin_path"].startswith("pipe:[")
    elif kind == "devnull":
        assert ev["stdin_path"] == "/dev/null"
    else:
        assert ev["stdin_path"].startswith("/dev/pts/")


def test_memfd_exec(agent: AgentRun, progs: Progs) -> None:
    mark = new_mark()
    with Live([progs.memfd_exec, SLEEP, "30"], mark) as p:
        ev = agent.one(lambda e: marked(mark)(e) and e["pathname"].startswith("/memfd:"))
        assert_live_process(ev, p.pid)
        exe = os.stat(f"/proc/{p.pid}/exe")
        assert ev["pathname"] == os.readlink(f"/proc/{p.pid}/exe") == "/memfd:oe-memfd (deleted)"
        assert (ev["dev"], ev["inode"], ev["ctime"], ev["inode_mode"]) == \
            (exe.st_dev, exe.st_ino, exe.st_ctime_ns, exe.st_mode)
    assert ev["cmdpath"].startswith("/dev/fd/")
    assert_loader(ev, SLEEP)


def test_execveat_unlinked(agent: AgentRun, progs: Progs, tmp_path: Path) -> None:
    mark = new_mark()
    proc, rfd = popen_with_fd3([progs.execveat_unlinked, SLEEP, str(tmp_path), "sleep", "30"],
                               env=marked_env(mark), stdin=subprocess.DEVNULL)
    try:
        with os.fdopen(rfd, "rb") as r:
            truth = json.loads(r.read())
        ev = agent.one(lambda e: marked(mark)(e) and e["comm"] != "execveat_unlink")
        assert_live_process(ev, proc.pid)
        assert ev["pathname"] == truth["path"] + " (deleted)" == os.readlink(f"/proc/{proc.pid}/exe")
        assert (ev["dev"], ev["inode"]) == (truth["dev"], truth["ino"])
        assert ev["ctime"] == truth["ctime_sec"] * 10**9 + truth["ctime_nsec"]
        assert ev["cmdpath"] == f"/dev/fd/{truth['fd']}"
        assert ev["argv"] == ["sleep", "30"]
    finally:
        proc.kill()
        proc.wait()


def test_exec_from_non_leader_thread(agent: AgentRun, progs: Progs) -> None:
    mark = new_mark()
    proc, rfd = popen_with_fd3([progs.thread_exec, SLEEP, "30"], env=marked_env(mark), stdin=subprocess.DEVNULL)
    try:
        with os.fdopen(rfd, "rb") as r:
            old_tid = int(r.read())
        assert old_tid != proc.pid
        ev = agent.one(lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
        assert_live_process(ev, proc.pid)
        assert ev["prev_comm"] == "thread_exec"
    finally:
        proc.kill()
        proc.wait()


def test_new_pid_and_mount_namespace(agent: AgentRun) -> None:
    mark = new_mark()
    unshare = shutil.which("unshare")
    with Live([unshare, "--pid", "--mount", "--fork", SLEEP, "30"], mark) as p:
        ev = agent.one(lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
        child = ev["host_pid"]
        assert child != p.pid
        assert_live_process(ev, child)
    assert (ev["pid"], ev["tid"], ev["ppid"]) == (1, 1, 0)
    assert ev["host_ppid"] == p.pid
    assert f"pid:[{ev['pid_ns']}]" != os.readlink("/proc/self/ns/pid")
    assert f"mnt:[{ev['mount_ns']}]" != os.readlink("/proc/self/ns/mnt")


def test_setuid_binary(agent: AgentRun, progs: Progs, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    binary = tmp_path / "print_ids_suid"
    shutil.copy2(progs.print_ids, binary)
    os.chown(binary, 65534, 65534)
    binary.chmod(0o4755)
    mark = new_mark()
    out = subprocess.run([str(binary)], env=marked_env(mark), check=True, capture_output=True, text=True).stdout
    uid, gid, euid, egid = (int(x) for x in out.split())
    ev = agent.one(marked(mark))
    assert euid == 65534 and uid == os.getuid()
    assert (ev["uid"], ev["gid"], ev["euid"], ev["egid"]) == (uid, gid, euid, egid)
    assert ev["inode_mode"] & stat.S_ISUID


def test_usermode_helper_is_invoked_from_kernel(agent: AgentRun, progs: Progs, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    helper = tmp_path / "oe-core-helper"
    helper.write_text("#!/bin/sh\ncat > /dev/null\n")
    helper.chmod(0o755)
    pattern = Path("/proc/sys/kernel/core_pattern")
    saved = pattern.read_text()
    try:
        pattern.write_text(f"|{helper} %p")
        crash = subprocess.run([progs.crash], cwd=tmp_path, env=marked_env(new_mark()))
        assert crash.returncode == -11
        ev = agent.one(lambda e: e["cmdpath"] == str(helper), timeout=15)
    finally:
        pattern.write_text(saved)
    assert ev["invoked_from_kernel"] is True
    assert Path(f"/proc/{ev['host_ppid']}/comm").read_text().strip() == "kthreadd"
    assert ev["argv"][:2] == ["/bin/sh", str(helper)] and ev["argv"][2].isdigit()


def test_empty_last_argument(agent: AgentRun, progs: Progs) -> None:
    mark = new_mark()
    subprocess.run([progs.exec_argv, progs.print_argv, "pa", "x", ""], env=marked_env(mark), check=True,
                   capture_output=True)
    ev = agent.one(lambda e: marked(mark)(e) and e["comm"] == "print_argv")
    assert ev["argv"] == ["pa", "x", ""]
    assert ev["argc"] == 3


def test_argc_zero(agent: AgentRun, progs: Progs) -> None:
    mark = new_mark()
    out = subprocess.run([progs.exec_argv, "--argc0", progs.print_argv], env=marked_env(mark), check=True,
                         capture_output=True, text=True).stdout
    truth = json.loads(out)
    ev = agent.one(lambda e: marked(mark)(e) and e["comm"] == "print_argv")
    # Since 5.18 the kernel turns an empty argv into [""]; the event shows
    # what the process really got.
    assert ev["argv"] == truth["argv"] == [""]
    assert ev["argc"] == truth["argc"]


def test_argv_and_env_beyond_the_bound(agent: AgentRun, progs: Progs) -> None:
    mark = new_mark()
    argv = [progs.print_argv] + [f"{i:04d}" + "a" * 3000 for i in range(15)]  # ~45 KiB > 32 KiB
    env = marked_env(mark, **{f"BIG_{i:02d}": "e" * 3000 for i in range(15)})
    subprocess.run(argv, env=env, check=True, capture_output=True)
    ev = agent.one(marked(mark))
    assert ev["argv_truncated"] and ev["env_truncated"]
    assert 0 < len(ev["argv"]) < len(argv) and ev["argv"] == argv[:len(ev["argv"])]
    entries = [f"{k}={v}" for k, v in env.items()]
    assert 0 < len(ev["env"]) < len(entries) and ev["env"] == entries[:len(ev["env"])]
    assert (ev["argc"], ev["envc"]) == (len(argv), len(entries))
    assert sum(len(a) + 1 for a in ev["argv"]) <= 32 * 1024


def test_non_utf8_path_and_argv(agent: AgentRun, progs: Progs, tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/oe-\xff\xfe-\xc3(-true"
    shutil.copy2(progs.dyn_true, name)
    mark = new_mark()
    subprocess.run([name, b"x\xffy", "ok"], env=marked_env(mark), check=True)
    ev = agent.one(marked(mark))
    assert ev["pathname"] == esc(name) == ev["cmdpath"]
    assert "\\xff\\xfe" in ev["pathname"]
    assert ev["argv"] == [esc(name), "x\\xffy", "ok"]
    st = os.stat(name)
    assert (ev["dev"], ev["inode"], ev["ctime"]) == (st.st_dev, st.st_ino, st.st_ctime_ns)


def test_container_id_from_cgroup(agent: AgentRun, tmp_path: Path) -> None:
    cid = "0123456789abcdef" * 4
    mark = new_mark()
    with new_cgroup(f"docker-{cid}.scope") as cg:
        with Live(["/bin/sh", "-c", f"echo $$ > {cg}/cgroup.procs && exec {SLEEP} 30"], mark) as p:
            ev = agent.one(lambda e: marked(mark)(e) and e["argv"] == [SLEEP, "30"])
            assert_live_process(ev, p.pid)
            p.kill()
            p.wait()
    assert ev["container_id"] == cid
    assert ev["cgroup_path"] == f"/docker-{cid}.scope"
    assert ev["cgroup_id"] != 0


def test_children_of_a_subshell_name_the_shell_as_image_parent(agent: AgentRun) -> None:
    """A subshell is a forked copy that never exec'd: its children's image
    parent (and parent_exec_id) is the shell whose image it runs."""
    mark = new_mark()
    forker = ("import os, subprocess\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    subprocess.run(['/bin/true']); subprocess.run(['/bin/true']); os._exit(0)\n"
              "os.waitpid(pid, 0)\n")
    subprocess.run([sys.executable, "-c", forker], env=marked_env(mark), check=True)
    events = agent.find(marked(mark), count=3)
    (sh,) = [e for e in events if e["argv"][:2] == [sys.executable, "-c"]]
    trues = [e for e in events if e["comm"] == "true"]
    assert len(trues) == 2
    for t in trues:
        assert t["host_ppid"] != sh["host_pid"]  # the subshell
        assert t["image_ppid"] == sh["host_pid"]
        assert t["parent_exec_id"] == sh["exec_id"]
    assert sh["image_ppid"] == sh["host_ppid"] == os.getpid()
    assert sh["parent_exec_id"] == parent_exec_id_of_me()
