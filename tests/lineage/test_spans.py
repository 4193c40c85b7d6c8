"""Span lineage rules with synthetic exec sequences (the kernel path is
covered end to end in tests/e2e/test_e2e_otlp.py)."""
from __future__ import annotations

import pytest

from otel_exec.errors import UsageError
from otel_exec.lineage.proctable import ProcessTable
from otel_exec.model.events import Strings
from otel_exec.lineage.spans import SpanLineage, TraceparentTrust
from otel_exec.lineage.traceparent import TraceContextCarrier, parse_traceparent, remote_parent, trace_context_entries
from tests.helpers.events import exec_ev

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")


class World:
    def __init__(self) -> None:
        self.table = ProcessTable()
        self.lineage = SpanLineage(self.table)

    def exec(self, pid: int, ppid: int, ticks: int, exec_id: str, env: list[str] = [], ts: int = 1000):
        """As the kernel reports it: the image parent's exec id comes along."""
        parent = self.table.get(ppid)
        ev = exec_ev(pid, ppid, ticks, exec_id, ts=ts, parent_exec_id=parent.exec_id if parent else "")
        ev.image_ppid = ppid
        ev.env = list(env)
        return self.lineage.on_exec(ev)


def test_root_then_fork_exec_children_nest() -> None:
    w = World()
    sh = w.exec(10, 1, 5, "sh")
    assert sh is not None and sh.parent_span_id == b"" and len(sh.trace_id) == 16
    true = w.exec(11, 10, 6, "true")
    assert (true.trace_id, true.parent_span_id) == (sh.trace_id, sh.span_id)
    assert true.span_id != sh.span_id


def test_reexec_nests_under_previous_image() -> None:
    w = World()
    first = w.exec(10, 1, 5, "a")
    second = w.exec(10, 1, 5, "b")
    assert second.parent_span_id == first.span_id and second.trace_id == first.trace_id
    again = w.exec(10, 1, 5, "a", ts=2000)
    assert again.span_id != first.span_id  # same exec id, told apart by exec time


def test_traceparent_attaches_and_inherited_copy_nests_under_process() -> None:
    w = World()
    app = w.exec(10, 1, 5, "app")
    sh = w.exec(11, 10, 6, "sh", env=[f"TRACEPARENT={TP}", "TRACESTATE=k=v"])
    assert (sh.trace_id, sh.parent_span_id, sh.trace_state) == (TRACE, SPAN, "k=v")
    # sh's child inherits the same TRACEPARENT unchanged: it nests under sh,
    # not flat under the application's span.
    curl = w.exec(12, 11, 7, "curl", env=[f"TRACEPARENT={TP}"])
    assert (curl.trace_id, curl.parent_span_id) == (TRACE, sh.span_id)
    assert app.trace_id != TRACE


def test_malformed_traceparent_is_counted_and_ignored() -> None:
    w = World()
    parent = w.exec(10, 1, 5, "p")
    child = w.exec(11, 10, 6, "c", env=["TRACEPARENT=garbage"])
    assert child.parent_span_id == parent.span_id
    assert w.lineage.malformed_traceparent == 1


def test_parent_that_reexeced_since_is_not_the_parent() -> None:
    w = World()
    w.exec(10, 1, 5, "old-image")
    ev = exec_ev(11, 10, 6, "child", parent_exec_id="old-image")
    ev.image_ppid = 10
    w.exec(10, 1, 5, "new-image", ts=2000)
    info = w.lineage.on_exec(ev)
    assert info.parent_span_id == b""  # the old image's span is gone: a new trace


def test_parse_traceparent_rules() -> None:
    assert parse_traceparent(TP) == (TRACE, SPAN, 1)
    assert parse_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None  # all-zero trace id
    assert parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01") is None
    assert parse_traceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") is None
    assert parse_traceparent(TP + "-extra") is None  # version 00 has exactly four fields
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra") == \
        (TRACE, SPAN, 0)  # a future version may append fields
    assert parse_traceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01") is None
    assert trace_context_entries(["TRACEPARENT=a", "TRACEPARENT=b", "BAGGAGE=x=1"]) == \
        {"TRACEPARENT": "a", "BAGGAGE": "x=1"}


def _world_trusting(spec: str) -> World:
    w = World()
    w.lineage = SpanLineage(w.table, TraceparentTrust.parse(spec), lambda v: v.replace("secret", "[REDACTED]"))
    return w


def _exec_as(w: World, uid: int, pid: int, ppid: int, ticks: int, exec_id: str, env: list[str]):
    parent = w.table.get(ppid)
    ev = exec_ev(pid, ppid, ticks, exec_id, parent_exec_id=parent.exec_id if parent else "")
    ev.image_ppid, ev.env, ev.uid = ppid, list(env), uid
    return w.lineage.on_exec(ev)


def test_untrusted_traceparent_is_recorded_not_followed() -> None:
    w = _world_trusting("root")
    sh = _exec_as(w, 65534, 10, 1, 5, "sh", [])
    child = _exec_as(w, 65534, 11, 10, 6, "c", [f"TRACEPARENT={TP}"])
    assert (child.trace_id, child.parent_span_id) == (sh.trace_id, sh.span_id)
    assert child.untrusted_traceparent == TP and w.lineage.untrusted_traceparent == 1
    # Its children inherit the same value unchanged: they nest under it.
    grandchild = _exec_as(w, 65534, 12, 11, 7, "g", [f"TRACEPARENT={TP}"])
    assert grandchild.parent_span_id == child.span_id and not grandchild.untrusted_traceparent
    root = _exec_as(w, 0, 20, 1, 8, "r", [f"TRACEPARENT={TP}", "TRACESTATE=k=secret"])
    assert (root.trace_id, root.parent_span_id) == (TRACE, SPAN)
    assert root.trace_state == "k=[REDACTED]" and not root.untrusted_traceparent


def test_trust_specs() -> None:
    assert TraceparentTrust.parse("any").trusts(1234)
    assert not TraceparentTrust.parse("none").trusts(0)
    listed = TraceparentTrust.parse("root,1000")
    assert listed.trusts(0) and listed.trusts(1000) and not listed.trusts(1001)
    for bad in ("", "bob", "root,", "-1", "4294967295"):
        with pytest.raises(UsageError):
            TraceparentTrust.parse(bad)
    w = _world_trusting("none")
    assert _exec_as(w, 0, 10, 1, 5, "a", [f"TRACEPARENT={TP}"]).parent_span_id == b""


def test_lineage_reads_trace_context_from_before_redaction() -> None:
    """--env-capture none emits no environment: the decoded block carries
    the context the policy read from the raw one (policy.stage.ExecPolicy)."""
    from otel_exec.model.events import Strings
    from otel_exec.policy.redact import RedactionPolicy

    raw = [f"TRACEPARENT={TP}", "PATH=/bin"]
    emitted = Strings(RedactionPolicy("none").env(raw))
    emitted.trace_context = trace_context_entries(raw)
    assert emitted == []
    w = World()
    info = w.exec(10, 1, 5, "a")
    ev = exec_ev(11, 10, 6, "b", parent_exec_id="a")
    ev.image_ppid, ev.env = 10, emitted
    child = w.lineage.on_exec(ev)
    assert (child.trace_id, child.parent_span_id) == (TRACE, SPAN)


def _member(key: str, size: int) -> str:
    """A tracestate list member of exactly `size` characters."""
    return f"{key}=" + "v" * (size - len(key) - 1)


def test_remote_parent_bounds_its_tracestate() -> None:
    """By whole members (policy.redact.bounded_tracestate, tested at its
    boundaries in tests/policy/test_redact.py)."""
    state = _member("a", 300) + "," + _member("b", 212)
    parent = remote_parent({"TRACEPARENT": TP, "TRACESTATE": state})
    assert parent is not None and parent.trace_state == _member("a", 300)
    assert remote_parent({"TRACEPARENT": TP}).trace_state == ""


def test_a_tracestate_the_scan_lengthened_is_bounded_again() -> None:
    w = World()
    w.lineage = SpanLineage(w.table, scrub=lambda v: v.replace("s", "[REDACTED]"))
    state = _member("a", 400) + "," + "b=" + "s" * 13  # 416 characters, 533 once scanned
    span = w.exec(10, 1, 5, "a", env=[f"TRACEPARENT={TP}", f"TRACESTATE={state}"])
    assert span.trace_state == _member("a", 400)


def test_traceparent_flags_and_whitespace() -> None:
    base = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"
    # The flags as received, all eight bits: bit 0 is sampled.
    assert [parse_traceparent(base + f)[2] for f in ("00", "01", "02", "03", "ff")] == [0, 1, 2, 3, 255]
    assert parse_traceparent(f"  {TP}\n") == (TRACE, SPAN, 1)  # the value as a shell may leave it
    assert parse_traceparent(TP[:-1]) is None and parse_traceparent("") is None
    assert parse_traceparent("fe-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (TRACE, SPAN, 1)


def test_trace_context_entries_scan_like_getenv() -> None:
    env = ["PATH=/bin", "TRACEPARENT", "TRACEPARENTX=1", "TRACESTATE=a=1", "TRACESTATE=a=2", "BAGGAGE=k=v",
           "BAGGAGEX=0", "XTRACEPARENT=0", "TRACEPARENT=" + TP]
    assert trace_context_entries(env) == {"TRACESTATE": "a=1", "BAGGAGE": "k=v", "TRACEPARENT": TP}
    assert trace_context_entries([]) == {}
    cached = Strings(["TRACEPARENT=" + TP])
    first = trace_context_entries(cached)
    cached.append("TRACESTATE=late")  # a decoded block never changes: the first scan is kept
    assert trace_context_entries(cached) is first and first == {"TRACEPARENT": TP}
    plain = ["TRACEPARENT=" + TP]
    trace_context_entries(plain)
    plain.append("TRACESTATE=x")  # a plain list is scanned every time
    assert trace_context_entries(plain) == {"TRACEPARENT": TP, "TRACESTATE": "x"}


def test_remote_parent_needs_a_valid_traceparent() -> None:
    assert remote_parent({}) is None
    assert remote_parent({"TRACESTATE": "a=1"}) is None
    assert remote_parent({"TRACEPARENT": "garbage", "TRACESTATE": "a=1"}) is None
    parent = remote_parent({"TRACEPARENT": TP, "TRACESTATE": "a=1", "BAGGAGE": "k=v"})
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.flags, parent.trace_state) == (TRACE, SPAN, 1, "a=1")


def test_digest_ids() -> None:
    from otel_exec.lineage.spans import _digest
    exec_id = "0af7651916cd43dd8448eb211c80319c"
    assert _digest(exec_id, 0, 8) == bytes.fromhex(exec_id[:16])  # its leading bytes, stable across restarts
    assert _digest(exec_id, 0, 16) == bytes.fromhex(exec_id)
    salted = _digest(exec_id, 5, 8)
    assert len(salted) == 8 and salted != _digest(exec_id, 0, 8) and salted != _digest(exec_id, 6, 8)
    assert salted == _digest(exec_id, 5, 8)
    for odd in ("not-hex-at-all!!", "0af7", "12@1000"):  # no exec id: pid@time keys
        d = _digest(odd, 0, 8)
        assert len(d) == 8 and d == _digest(odd, 0, 8) and d != _digest(odd + "x", 0, 8)
    assert _digest("0" * 32, 0, 8) == b"\1" * 8  # an all-zero id is invalid in OTLP


class Recorder:
    """A sink that keeps what the agent hands it."""

    def __init__(self) -> None:
        self.execs: list = []  # (event, span)

    def on_exec(self, ev, span) -> None:
        self.execs.append((ev, span))

    def on_observed(self, ev, span) -> None:
        self.execs.append((ev, span))

    def on_span_end(self, span) -> None:
        pass


def fake_proc(root, pid: int, ppid: int, ticks: int, exe=None, environ: bytes | None = None) -> None:
    """/proc/PID as procfs.running reads it: stat (start ticks in field 22),
    cmdline, exe (a link; none for a kernel thread), environ if given."""
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_bytes(f"{pid} (c) S {ppid} ".encode() + b"0 " * 17 + f"{ticks} 0 0\n".encode())
    (d / "cmdline").write_bytes(b"")
    if exe is not None:
        (d / "exe").symlink_to(exe)
    if environ is not None:
        (d / "environ").write_bytes(environ)


def observing_agent():
    from otel_exec.agent import Agent
    from otel_exec.config import Config
    from otel_exec.host.identity import HostIdentity

    recorder = Recorder()
    return Agent(Config(), [recorder], HostIdentity.current()), recorder  # type: ignore[list-item]


def test_observed_processes_found_in_proc_get_spans(tmp_path) -> None:
    from otel_exec.host.procfs import environ

    proc, bin_ = tmp_path / "proc", tmp_path / "bin"
    bin_.mkdir()
    for name in ("init", "sh", "app", "ls", "bad", "x", "y"):
        (bin_ / name).write_bytes(b"")
    fake_proc(proc, 1, 0, 1, bin_ / "init")
    fake_proc(proc, 2, 0, 1)  # a kernel thread: no exe
    fake_proc(proc, 100, 1, 50, bin_ / "sh", b"PATH=/bin\0")
    fake_proc(proc, 101, 100, 60, bin_ / "app", f"A=1\0TRACEPARENT={TP}\0TRACESTATE=k=v\0".encode())
    fake_proc(proc, 102, 100, 70, bin_ / "ls")  # no environ readable: []
    fake_proc(proc, 103, 100, 71, bin_ / "bad", b"TRACEPARENT=00-nothex\0")
    fake_proc(proc, 105, 106, 80, bin_ / "x", b"")
    fake_proc(proc, 106, 1, 90, bin_ / "y", b"")  # holds 105's parent pid but started after it
    agent, recorder = observing_agent()
    ident = agent.identity
    agent.observe_running(str(proc))
    assert all(ev.observed for ev, _ in recorder.execs) and agent.exported == 0
    assert all(ev.env == [] for ev, _ in recorder.execs)  # only its trace context is kept
    spans = {ev.host_pid: span for ev, span in recorder.execs}
    init, kthread, shell, app, child, bad, orphan, later = (spans[p] for p in (1, 2, 100, 101, 102, 103, 105, 106))
    exec_id = {pid: agent.table.get(pid).exec_id for pid in spans}
    assert init is None and kthread is None  # pid 1 and kernel threads get no span
    assert shell is not None and shell.span_id == bytes.fromhex(exec_id[100][:16])
    assert shell.trace_id == bytes.fromhex(exec_id[100]) and shell.parent_span_id == b""
    assert shell.start_ns == ident.boot_ns_to_epoch_ns(50 * ident.ns_per_tick)
    assert (app.trace_id, app.parent_span_id, app.trace_state, app.traceparent) == (TRACE, SPAN, "k=v", TP)
    assert (child.trace_id, child.parent_span_id) == (shell.trace_id, shell.span_id)
    assert (bad.trace_id, bad.parent_span_id) == (shell.trace_id, shell.span_id)
    assert agent.lineage.malformed_traceparent == 1
    assert orphan.parent_span_id == b"" and orphan.trace_id == bytes.fromhex(exec_id[105])
    assert later.parent_span_id == b""
    before = shell.span_id
    agent.observe_running(str(proc))  # processes the table knows already are left alone
    assert len(recorder.execs) == 8 and agent.table.get(100) is shell.process and shell.span_id == before
    (tmp_path / "107").mkdir()
    (tmp_path / "107" / "environ").write_bytes(b"X=\xff\0\0Y=2\0")
    assert environ(107, proc=str(tmp_path)) == (["X=\\xff", "Y=2"], 2)
    assert environ(107, ("Y",), proc=str(tmp_path)) == (["Y=2"], 2)
    assert environ(999, proc=str(tmp_path)) == ([], 0)


def test_span_ids_of_reexecs_and_execs_without_exec_id() -> None:
    from otel_exec.lineage.spans import _digest
    w = World()
    exec_id = "ab" + "1" * 30
    first = w.exec(20, 1, 5, exec_id, ts=1000)
    assert first.span_id == _digest(exec_id, 0, 8) and first.start_ns == 1000
    assert first.trace_state == "" and first.parent_span_id == b""
    again = w.exec(20, 1, 5, exec_id, ts=2000)  # the same file exec'd again: same exec id
    assert again.span_id == _digest(exec_id, 2000, 8) != first.span_id
    assert again.parent_span_id == first.span_id and again.start_ns == 2000
    anonymous = w.exec(21, 1, 6, "", ts=3000)  # BCC could not verify an exec id
    assert anonymous.span_id == _digest("21@3000", 0, 8)
    assert anonymous.trace_id == _digest("21@3000", 0, 16)
    for pid in (22, 23):
        w.exec(pid, 1, 7, f"ab{pid:030x}", env=["TRACEPARENT=garbage"])
    assert w.lineage.malformed_traceparent == 2


def test_observed_parent_started_in_the_same_tick(tmp_path) -> None:
    proc = tmp_path / "proc"
    (tmp_path / "p").write_bytes(b"")
    (tmp_path / "c").write_bytes(b"")
    fake_proc(proc, 31, 30, 40, tmp_path / "c")
    fake_proc(proc, 30, 1, 40, tmp_path / "p")
    agent, recorder = observing_agent()
    agent.observe_running(str(proc))
    spans = {ev.host_pid: span for ev, span in recorder.execs}
    parent, child = spans[30], spans[31]
    assert child.parent_span_id == parent.span_id and child.trace_id == parent.trace_id


def test_observed_exec_leaves_entries_from_events() -> None:
    """A process the table knows from a kernel event is not replaced by its
    observed exec event: events know more."""
    import os

    from otel_exec.host.procfs import STAT_STARTTIME, read, stat_fields

    agent, recorder = observing_agent()
    ticks = int(stat_fields(read(f"/proc/{os.getpid()}/stat"))[STAT_STARTTIME])
    agent.handle(exec_ev(os.getpid(), os.getppid(), ticks, "from-event"))
    agent.observe_running()
    assert agent.table.get(os.getpid()).exec_id == "from-event"
    assert [ev.observed for ev, _ in recorder.execs if ev.host_pid == os.getpid()] == [False]


def test_a_non_sampled_traceparent_is_inherited_by_the_whole_tree() -> None:
    """As a ParentBased sampler: the flags of a TRACEPARENT as received, and
    of the span continued for everything below it."""
    w = World()
    app = w.exec(10, 1, 5, "app")
    assert app.trace_flags == 1  # a new trace is sampled
    unsampled = TP[:-2] + "00"
    sh = w.exec(11, 10, 6, "sh", env=[f"TRACEPARENT={unsampled}"])
    assert (sh.trace_id, sh.parent_span_id, sh.trace_flags) == (TRACE, SPAN, 0)
    child = w.exec(12, 11, 7, "make", env=[f"TRACEPARENT={unsampled}"])  # inherited unchanged
    grandchild = w.exec(13, 12, 8, "cc")  # its environment dropped the variable
    reexec = w.exec(13, 12, 8, "ld", ts=2000)
    for span in (child, grandchild, reexec):
        assert span.trace_id == TRACE and span.trace_flags == 0
    assert reexec.parent_span_id == grandchild.span_id
    # A process that sets a sampled TRACEPARENT of its own is sampled again.
    resampled = w.exec(14, 13, 9, "curl", env=[f"TRACEPARENT={TP[:-2]}03"])
    assert (resampled.parent_span_id, resampled.trace_flags) == (SPAN, 3)  # the flags as received


def test_an_untrusted_unsampled_traceparent_does_not_unsample() -> None:
    w = _world_trusting("root")
    sh = _exec_as(w, 65534, 10, 1, 5, "sh", [f"TRACEPARENT={TP[:-2]}00"])
    assert sh.trace_flags == 1 and sh.untrusted_traceparent


def test_carrier_names_can_be_changed() -> None:
    carrier = TraceContextCarrier("CI_TRACEPARENT", "CI_TRACESTATE")
    assert carrier.names == {"TRACEPARENT": "CI_TRACEPARENT", "TRACESTATE": "CI_TRACESTATE", "BAGGAGE": "BAGGAGE"}
    env = ["TRACEPARENT=ignored", "CI_TRACEPARENT=" + TP, "CI_TRACESTATE=a=1", "CI_TRACEPARENT=second",
           "CI_TRACEPARENTX=1", "BAGGAGE=k=v"]
    assert carrier.entries(env) == {"TRACEPARENT": TP, "TRACESTATE": "a=1", "BAGGAGE": "k=v"}
    w = World()
    w.lineage = SpanLineage(w.table, trace_context=carrier.entries)
    span = w.exec(10, 1, 5, "a", env=env)
    assert (span.trace_id, span.parent_span_id, span.trace_state) == (TRACE, SPAN, "a=1")
    assert w.exec(11, 1, 6, "b", env=["TRACEPARENT=" + TP]).parent_span_id == b""  # the default name means nothing now
    for traceparent, tracestate in (("", "TRACESTATE"), ("A=B", "TRACESTATE"), ("1TP", "TRACESTATE"),
                                    ("X", "X"), ("BAGGAGE", "TRACESTATE"), ("TRACEPARENT", "TRACE STATE")):
        with pytest.raises(UsageError):
            TraceContextCarrier(traceparent, tracestate)
