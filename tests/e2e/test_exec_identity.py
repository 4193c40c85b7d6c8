"""Executable identity on the live kernel (issue 16): each exec arrives with
the values sha256sum, readelf -n, go tool buildid and a literal htlhash
computation give for the file it ran, or with the documented flag
(docs/fields.md#executable-identity). Never with another file's values."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.agent_run import AgentRun, Live, kernel_available, marked, marked_env, new_mark, public_dir, stop_line  # noqa: F401
from tests.helpers.collector import Collector
from tests.helpers.progs import Progs
from testkit.environment import variable
from testkit.exe_reference import build_c, build_go, go_tool_buildid, readelf_build_id, reference_htlhash, sha256sum

pytestmark = pytest.mark.kernel

CAP = 100_000_000  # the agent's --executable-sha256-max-bytes here
SPARSE_SIZE = 500 * 1000 * 1000
NOBODY = 65534


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentRun]:
    """An agent that waits long enough for every hash on a loaded machine:
    the values are then on the exec record itself."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path_factory.mktemp("agent"), "--executable-wait-ms", "1000",
                   "--executable-sha256-max-bytes", str(CAP))
    yield run
    rc, err = run.stop()
    assert rc == 0, err


def reference(path: Path) -> dict[str, object]:
    """What the independent tools say about path."""
    ref: dict[str, object] = {"status": "complete", "size": path.stat().st_size, "sha256": sha256sum(path),
                              "htlhash": reference_htlhash(path)}
    gnu = readelf_build_id(path) if path.read_bytes()[:4] == b"\x7fELF" else None
    if gnu:
        ref["gnu_build_id"] = gnu
    return ref


def run_marked(argv: list[str], **extra: str) -> str:
    mark = new_mark()
    subprocess.run(argv, env=marked_env(mark, **extra), check=True, stdin=subprocess.DEVNULL)
    return mark


def test_dynamic_elf_with_known_build_id(agent: AgentRun, tmp_path: Path) -> None:
    exe = build_c(tmp_path, "oe-dyn", "-Wl,--build-id=sha1")
    ev = agent.one(marked(run_marked([str(exe)])))
    assert ev["executable_identity"] == reference(exe)
    assert len(ev["executable_identity"]["gnu_build_id"]) == 40
    assert ev["script_identity"] is None


def test_static_elf(agent: AgentRun, tmp_path: Path) -> None:
    exe = build_c(tmp_path, "oe-static", "-static", "-Wl,--build-id")
    ev = agent.one(marked(run_marked([str(exe)])))
    assert ev["interpreter_pathname"] == ""
    assert ev["executable_identity"] == reference(exe)


def test_go_binary(agent: AgentRun, tmp_path: Path) -> None:
    exe = build_go(tmp_path)
    ev = agent.one(marked(run_marked([str(exe)])))
    assert ev["executable_identity"] == {**reference(exe), "go_build_id": go_tool_buildid(exe)}


@pytest.mark.parametrize("size", [200, 6000, 20000])
def test_script_and_its_interpreter(agent: AgentRun, tmp_path: Path, size: int) -> None:
    """The interpreter is the executable; the script, opened by the path
    given to execve, comes alongside, flagged by_path. Sizes below 4096,
    between 4096 and 8192, and above, for the htlhash."""
    script = tmp_path / "oe-script.sh"
    body = "#!/bin/sh\nexit 0\n"
    script.write_text(body + "#" * (size - len(body) - 1) + "\n")
    script.chmod(0o755)
    assert script.stat().st_size == size
    ev = agent.one(marked(run_marked([str(script)])))
    interpreter = Path(ev["pathname"])
    assert interpreter == Path(os.path.realpath("/bin/sh"))
    assert ev["executable_identity"] == reference(interpreter)
    assert ev["script_identity"] == {**reference(script), "status": "by_path"}


def test_another_users_process_and_a_setuid_binary(agent: AgentRun, public_dir: Path) -> None:
    """The agent holds no capability after start-up: /proc/PID/exe of a
    process of another user, or of a setuid one, is refused to it. The
    path, checked against the kernel's device, inode and ctime, is read
    instead: the same values."""
    exe = build_c(public_dir, "oe-nobody", "-Wl,--build-id")
    exe.chmod(0o755)
    mark = new_mark()
    subprocess.run([str(exe)], env=marked_env(mark), check=True, user=NOBODY, group=NOBODY)
    ev = agent.one(marked(mark))
    assert ev["uid"] == NOBODY
    assert ev["executable_identity"] == reference(exe)

    setuid = public_dir / "oe-setuid"
    shutil.copy(build_c(public_dir, "oe-setuid-src", "-Wl,--build-id"), setuid)
    setuid.chmod(0o4755)  # owned by root: runs with euid 0 for nobody
    mark = new_mark()
    subprocess.run([str(setuid)], env=marked_env(mark), check=True, user=NOBODY, group=NOBODY)
    ev = agent.one(marked(mark))
    assert (ev["uid"], ev["euid"]) == (NOBODY, 0)
    assert ev["executable_identity"] == reference(setuid)


def test_a_file_the_agent_may_not_read_is_flagged(agent: AgentRun, public_dir: Path) -> None:
    """Execute-only for its owner (nobody): the agent, root without
    CAP_DAC_OVERRIDE after start-up, may not read it. Flagged, counted."""
    src = build_c(public_dir, "oe-src", "-Wl,--build-id")
    exe = public_dir / "oe-exec-only"
    shutil.copy(src, exe)
    os.chown(exe, NOBODY, NOBODY)
    exe.chmod(0o100)
    mark = new_mark()
    subprocess.run([str(exe)], env=marked_env(mark), check=True, user=NOBODY, group=NOBODY)
    assert agent.one(marked(mark))["executable_identity"] == {"status": "unreadable"}


def test_binary_replaced_by_rename_between_two_execs(agent: AgentRun, tmp_path: Path) -> None:
    """Each exec gets its own file's values: the cache is keyed by the
    kernel's device, inode and ctime, so the replacement is a new entry."""
    exe = tmp_path / "oe-renamed"
    first = build_c(tmp_path, "v1", "-Wl,--build-id")
    second = build_c(tmp_path, "v2", "-Wl,--build-id=md5")
    shutil.copy(first, exe)
    want_first = reference(exe)
    one = agent.one(marked(run_marked([str(exe)])))
    staged = tmp_path / "staged"
    shutil.copy(second, staged)
    os.rename(staged, exe)
    want_second = reference(exe)
    two = agent.one(marked(run_marked([str(exe)])))
    assert (one["inode"], two["inode"]) != (two["inode"], two["inode"])
    assert one["executable_identity"] == want_first
    assert two["executable_identity"] == want_second


def test_binary_replaced_right_after_its_exec_is_never_hashed_in_its_place(agent: AgentRun,
                                                                          tmp_path: Path) -> None:
    """The rename races the agent: the first exec has the first file's
    values or says changed, never the second file's."""
    exe = tmp_path / "oe-race"
    first = build_c(tmp_path, "v1", "-Wl,--build-id")
    second = build_c(tmp_path, "v2", "-Wl,--build-id=md5")
    seen = []
    for _ in range(10):
        shutil.copy(first, exe)
        want = reference(exe)
        mark = new_mark()
        staged = tmp_path / "staged"
        shutil.copy(second, staged)
        subprocess.run([str(exe)], env=marked_env(mark), check=True)
        os.rename(staged, exe)
        got = agent.one(marked(mark))["executable_identity"]
        assert got == want or got == {"status": "changed"}, got
        seen.append(got["status"])
    print("statuses:", seen)


def test_binary_deleted_while_running(agent: AgentRun, tmp_path: Path) -> None:
    """Unlinked right after the exec, another file put at the path: the
    values of the file that ran, or gone, or changed (the agent opened the
    path after the new file came: docs/fields.md, "Which file is read");
    never those of what the path names next."""
    exe = tmp_path / "oe-sleep"
    shutil.copy(os.path.realpath(shutil.which("sleep") or "/bin/sleep"), exe)
    want = reference(exe)
    mark = new_mark()
    with Live([str(exe), "30"], mark):
        exe.unlink()
        shutil.copy(build_c(tmp_path, "other", "-Wl,--build-id"), exe)  # a different file at the path
        got = agent.one(marked(mark))["executable_identity"]
    assert got == want or got in ({"status": "gone"}, {"status": "changed"}), got


def test_memfd_exec(agent: AgentRun, progs: Progs) -> None:
    """A memfd has no path to open: the values when the agent could open
    the process's /proc/PID/exe while it lived, else the memfd flag."""
    mark = run_marked([progs.memfd_exec, progs.dyn_true])
    ev = agent.one(lambda e: marked(mark)(e) and e["pathname"].startswith("/memfd:oe-memfd"))
    got = ev["executable_identity"]
    assert got == reference(Path(progs.dyn_true)) or got == {"status": "memfd"}, got


def test_sparse_500_mb_executable_honours_the_size_cap(agent: AgentRun, tmp_path: Path) -> None:
    """Above --executable-sha256-max-bytes: the build id and the htlhash
    (head, tail, length: the partial hash), no SHA-256."""
    exe = build_c(tmp_path, "oe-sparse", "-Wl,--build-id")
    build_id = readelf_build_id(exe)
    with open(exe, "r+b") as f:
        f.truncate(SPARSE_SIZE)
    assert exe.stat().st_blocks * 512 < 10 << 20  # sparse: nothing written past the program
    with open(exe, "rb") as f:
        head = f.read(4096)
        f.seek(SPARSE_SIZE - 4096)
        tail = f.read(4096)
    htl = hashlib.sha256(head + tail + SPARSE_SIZE.to_bytes(8, "big")).digest()[:16].hex()
    ev = agent.one(marked(run_marked([str(exe)])))
    assert ev["executable_identity"] == {"status": "too_large", "size": SPARSE_SIZE, "htlhash": htl,
                                         "gnu_build_id": build_id}


def test_storm_of_one_binary_computes_one_hash(tmp_path: Path) -> None:
    """500 execs of one new file: one computation, the rest cache hits,
    all counted in the agent's stop line."""
    exe = build_c(tmp_path, "oe-storm", "-Wl,--build-id")
    want = reference(exe)
    run = AgentRun(tmp_path / "agent", "--executable-wait-ms", "1000")
    try:
        mark = new_mark()
        script = f"for i in $(seq 500); do {exe}; done"
        subprocess.run(["/bin/sh", "-c", script], env=marked_env(mark), check=True)
        events = run.find(lambda e: marked(mark)(e) and e["pathname"] == str(exe), count=500, timeout=30)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert len(events) == 500
    assert all(e["executable_identity"] == want for e in events)
    counters = stop_line(err)
    # Every other file the agent saw exec'd (the shell, other processes on
    # the host, the scripts some of them are) costs at most one computation.
    files = {(e["dev"], e["inode"], e["ctime"]) for e in run.events}
    scripts = sum(1 for e in run.events if e["script_identity"] is not None)
    assert 1 <= counters["executable_identity_computed"] <= len(files) + scripts
    assert counters["executable_identity_cache_hits"] >= 499
    assert "executable_identity_flagged" in counters and "executable_identity_read_errors" in counters


def test_otlp_attributes_and_late_values_on_the_span(collector: Collector, tmp_path: Path) -> None:
    """With --executable-wait-ms 0 a file not yet in the cache is pending on
    its log record; the span, which ends after the worker is done (the
    process sleeps), carries the values and the final status."""
    exe = tmp_path / "oe-late"
    shutil.copy(os.path.realpath(shutil.which("sleep") or "/bin/sleep"), exe)
    with open(exe, "ab") as f:  # big enough that hashing is not instant
        f.write(os.urandom(1 << 20) * 32)
    want = reference(exe)
    run = AgentRun(tmp_path / "agent", "--exporter", "otlp", "--endpoint", collector.grpc_endpoint,
                   "--executable-wait-ms", "0",
                   env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200"))
    try:
        first = run_marked([str(exe), "2"])
        (rec,) = collector.wait_for_logs(
            lambda r: variable(r.attributes, "OE_TEST_MARK") == first, timeout=20)
        (span,) = collector.wait_for_spans(lambda s: s.span_id == rec.span_id, timeout=20)
        second = run_marked([str(exe), "0"])
        (rec2,) = collector.wait_for_logs(
            lambda r: variable(r.attributes, "OE_TEST_MARK") == second, timeout=20)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    keys = {"process.executable.build_id.gnu": want["gnu_build_id"],
            "process.executable.build_id.htlhash": want["htlhash"],
            "otel_exec.executable.sha256": want["sha256"], "otel_exec.executable.size": want["size"]}
    a = rec.attributes
    if a.get("otel_exec.executable.identity_status") == "pending":
        assert not any(k in a for k in keys)
        assert {k: span.attributes.get(k) for k in keys} == keys
        assert span.attributes["otel_exec.executable.identity_late"] == "complete"
        # The exec record's status stays on the record: a slim span has the values only.
        assert "otel_exec.executable.identity_status" not in span.attributes
    else:  # the worker was quicker than the record's encoding
        assert {k: a.get(k) for k in keys} == keys
    assert {k: rec2.attributes.get(k) for k in keys} == keys  # from the cache, on the record
    assert "otel_exec.executable.identity_status" not in rec2.attributes
