"""otel_exec.host.executables without the kernel: which file is read, the
cache, the bounded wait, the flags, the counters. The live-kernel checks
are in tests/test_exec_identity.py."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from testkit.exe_reference import exec_event
from otel_exec.export.otlp import encode
from otel_exec.host.executables import ExecutableIdentities
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.events import SHARED_FIELDS, SharedExec
from otel_exec.model.process import ProcessInfo
from otel_exec.model.executable import BY_PATH, CHANGED, COMPLETE, GONE, MEMFD, NO_PATH, PENDING

def started(**kw: object) -> ExecutableIdentities:
    ids = ExecutableIdentities(wait_s=5.0, **kw)  # type: ignore[arg-type]
    ids.start()
    return ids


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_computation_for_many_execs(tmp_path: Path) -> None:
    exe = tmp_path / "bin"
    exe.write_bytes(os.urandom(10000))
    ids = started()
    try:
        for _ in range(50):
            ev = exec_event(exe)
            assert ids.on_exec(ev) is None
            assert ev.executable_identity is not None and ev.executable_identity.sha256 == sha(exe)
        assert ids.stats() == {"executable_identity_computed": 1, "executable_identity_cache_hits": 49,
                               "executable_identity_flagged": 0, "executable_identity_read_errors": 0}
    finally:
        ids.stop()


def test_replaced_file_is_not_hashed_in_its_place(tmp_path: Path) -> None:
    exe = tmp_path / "bin"
    exe.write_bytes(b"first")
    ev = exec_event(exe)
    new = tmp_path / "new"
    new.write_bytes(b"second")
    os.rename(new, exe)
    ids = started()
    try:
        ids.on_exec(ev)
        assert ev.executable_identity is not None and ev.executable_identity.status == CHANGED
        assert ev.executable_identity.sha256 is None
        again = exec_event(exe)
        ids.on_exec(again)
        assert again.executable_identity is not None and again.executable_identity.sha256 == sha(exe)
    finally:
        ids.stop()


def test_own_process_is_read_through_proc(tmp_path: Path) -> None:
    """A live process the agent may open /proc/PID/exe of is read there:
    also when its path names nothing any more."""
    exe = os.readlink("/proc/self/exe")
    ev = exec_event(exe, pid=os.getpid())
    ev.pathname = "/nonexistent (deleted)"
    ids = started()
    try:
        ids.on_exec(ev)
        assert ev.executable_identity is not None and ev.executable_identity.status == COMPLETE
        assert ev.executable_identity.sha256 == sha(Path(exe))
    finally:
        ids.stop()


def test_flags_without_a_file(tmp_path: Path) -> None:
    ids = started()
    try:
        for path, status in (("/memfd:x (deleted)", MEMFD), (str(tmp_path / "gone (deleted)"), GONE),
                             (str(tmp_path / "missing"), GONE)):
            ev = exec_event(path)
            assert ids.on_exec(ev) is None
            assert ev.executable_identity is not None and ev.executable_identity.status == status, path
        ev = exec_event("/bin/true", cmdpath="true")
        ev.pathname, ev.unavailable = "", ("pathname",)  # --no-field paths, a relative cmdpath
        ids.on_exec(ev)
        assert ev.executable_identity is not None and ev.executable_identity.status == NO_PATH
        assert ids.flagged == 4 and ids.computed == 0
    finally:
        ids.stop()


def test_late_value_rides_on_the_span(tmp_path: Path) -> None:
    """Not ready within the wait: the record says pending; the span carries
    the values and the final status under its own key."""
    exe = tmp_path / "bin"
    exe.write_bytes(os.urandom(5000))
    ids = ExecutableIdentities(wait_s=0)  # the worker starts after the exec: always late
    ev = exec_event(exe)
    late = ids.on_exec(ev)
    assert late is not None and ev.executable_identity is not None and ev.executable_identity.status == PENDING
    ids.start()
    try:
        assert late.done.wait(5)
    finally:
        ids.stop()
    ended = ProcessSpan(ProcessInfo(1, 1, 0, "a" * 32, "", "x", str(exe), ["x"], False, 0), trace_id=b"t" * 16,
                        span_id=b"s" * 8, parent_span_id=b"", trace_state="", traceparent="",
                        untrusted_traceparent="", start_ns=1, end_ns=2, ended_by="exit", late_identity=late)
    span = encode.span(ended)
    assert sha(exe).encode() in span
    assert b"otel_exec.executable.identity_late" in span and b"complete" in span


def test_script_identity_by_path(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    interpreter = os.path.realpath("/bin/sh")
    ev = exec_event(interpreter, cmdpath="run.sh", interp="/bin/sh", pwd=str(tmp_path))
    ids = started()
    try:
        ids.on_exec(ev)
        assert ev.executable_identity is not None and ev.executable_identity.sha256 == sha(Path(interpreter))
        assert ev.script_identity is not None
        assert (ev.script_identity.status, ev.script_identity.sha256) == (BY_PATH, sha(script))
        again = exec_event(interpreter, cmdpath="run.sh", interp="/bin/sh", pwd=str(tmp_path))
        ids.on_exec(again)
        assert again.script_identity == ev.script_identity and ids.computed == 2
    finally:
        ids.stop()


def shared_exec(path: Path, repeats: bool = True, **kw: object) -> object:
    """exec_event(path, **kw) with a SharedExec, as the decoder shares one
    between the execs of one command (repeats: its memo kept it)."""
    ev = exec_event(path, **kw)  # type: ignore[arg-type]
    ev.shared = SharedExec(tuple(getattr(ev, name) for name in SHARED_FIELDS))
    ev.shared.repeats = repeats
    return ev


def test_execs_of_one_shared_part_find_their_identity_by_it(tmp_path: Path) -> None:
    """The identity an exec found is known by its SharedExec (kept by the
    decoder, not a script's, every identifying field there): the next execs
    sharing it get the same value and count as cache hits. A script, an exec
    with fields unavailable and a one-off SharedExec are not remembered so."""
    exe, script = tmp_path / "bin", tmp_path / "run.sh"
    exe.write_bytes(os.urandom(1000))
    script.write_text("#!/bin/sh\n")
    ids = started(cache_entries=2)
    try:
        first = shared_exec(exe)
        ids.on_exec(first)
        assert ids._by_shared == {first.shared: first.executable_identity}
        for _ in range(3):
            again = shared_exec(exe)
            again.shared = first.shared
            assert ids.on_exec(again) is None
            assert again.executable_identity is first.executable_identity
        assert (ids.computed, ids.cache_hits) == (1, 3)
        one_off = shared_exec(exe, repeats=False)
        ids.on_exec(one_off)
        flagged = shared_exec(exe)
        flagged.unavailable = ("pwd",)
        ids.on_exec(flagged)
        run = shared_exec(exe, cmdpath=str(script), interp="/bin/sh")
        ids.on_exec(run)
        assert run.script_identity is not None
        assert list(ids._by_shared) == [first.shared]
        # An unavailable field is checked on the way in too: no shortcut for it.
        flagged.shared = first.shared
        flagged.unavailable = ("dev",)
        flagged.executable_identity = None
        ids.on_exec(flagged)
        assert flagged.executable_identity is None and "executable_identity" in flagged.unavailable
        # Bounded as the cache: the first one stored goes first.
        others = [shared_exec(exe) for _ in range(2)]
        for ev in others:
            ids.on_exec(ev)
        assert list(ids._by_shared) == [o.shared for o in others]
    finally:
        ids.stop()


def test_cache_is_bounded(tmp_path: Path) -> None:
    ids = started(cache_entries=3)
    try:
        for i in range(10):
            f = tmp_path / f"b{i}"
            f.write_bytes(bytes([i]) * 100)
            ids.on_exec(exec_event(f))
        assert len(ids._cache) == 3 and ids.computed == 10
    finally:
        ids.stop()


def test_cached_identities_keep_no_event_of_their_own(tmp_path: Path) -> None:
    """A full cache of filled slots shares one set Event: each slot's own
    (a Condition, a lock, a deque) was most of an entry's memory."""
    ids = started(cache_entries=8)
    try:
        waiting = []
        for i in range(8):
            f = tmp_path / f"b{i}"
            f.write_bytes(bytes([i]) * 100)
            slot = ids._open_and_queue(exec_event(f), (0, 0, i))
            waiting.append(slot.done)  # taken before the fill, as the reader's wait takes it
            assert slot.done.wait(5)
        assert all(event.is_set() for event in waiting)
        assert len({id(slot.done) for slot in ids._cache.values()}) == 1
        assert all(slot.result is not None and slot.result.status == COMPLETE for slot in ids._cache.values())
    finally:
        ids.stop()


def test_wait_is_bounded(tmp_path: Path) -> None:
    """A file that takes long to hash does not hold the exec until it is
    done: the record goes out pending, the value comes later."""
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20) * 64)
    ids = ExecutableIdentities(wait_s=0.001)
    ids.start()
    try:
        ev = exec_event(big)
        late = ids.on_exec(ev)
        assert late is not None and late.result is None
        assert ev.executable_identity is not None and ev.executable_identity.status == PENDING
        assert late.done.wait(30) and late.result is not None and late.result.sha256 == sha(big)
    finally:
        ids.stop()


def test_a_path_turned_into_a_fifo_is_never_opened_for_reading(tmp_path: Path) -> None:
    """The path is opened with O_PATH and checked before any read: a FIFO
    (or a device) put where the executable or the script was is not opened
    for reading. A writer blocked on the FIFO would wake if it were."""
    fifo = tmp_path / "prog"
    ev = exec_event("/bin/true")
    ev.pathname = ev.cmdpath = ev.interp = str(fifo)
    os.mkfifo(fifo)
    script = exec_event(os.path.realpath("/bin/sh"), cmdpath=str(fifo), interp="/bin/sh")
    woke = threading.Event()

    def writer() -> None:
        with open(fifo, "wb"):
            woke.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    ids = started()
    try:
        ids.on_exec(ev)
        ids.on_exec(script)
        assert ev.executable_identity is not None and ev.executable_identity.status == CHANGED
        assert script.script_identity is not None and script.script_identity.status == GONE
        assert not woke.wait(0.5)
    finally:
        ids.stop()
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
        thread.join(5)


def test_the_path_as_executed_when_the_resolved_one_is_not_collected(tmp_path: Path) -> None:
    """--no-field paths: cmdpath, checked against the kernel's identity."""
    exe = tmp_path / "bin"
    exe.write_bytes(os.urandom(3000))
    ev = exec_event(exe)
    ev.pathname, ev.unavailable = "", ("pathname",)
    ids = started()
    try:
        ids.on_exec(ev)
        assert ev.executable_identity is not None and ev.executable_identity.sha256 == sha(exe)
    finally:
        ids.stop()


def test_a_non_utf8_path_is_opened_by_its_bytes(tmp_path: Path) -> None:
    """The decoder writes bytes that are not UTF-8 as \\xNN: they are turned
    back into the bytes to open the file (and the identity check stands)."""
    raw = os.fsencode(tmp_path) + b"/bin-\xff\xfe"
    with open(raw, "wb") as f:
        f.write(os.urandom(2000))
    ev = exec_event(os.fsdecode(raw))
    ev.pathname = ev.cmdpath = ev.interp = str(tmp_path) + "/bin-\\xff\\xfe"
    ids = started()
    try:
        ids.on_exec(ev)
        assert ev.executable_identity is not None
        assert ev.executable_identity.sha256 == hashlib.sha256(open(raw, "rb").read()).hexdigest()
    finally:
        ids.stop()
