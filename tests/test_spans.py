"""Span lineage rules with synthetic exec sequences (the kernel path is
covered end to end in tests/test_e2e_otlp.py)."""
from __future__ import annotations

import pytest

from otel_exec.errors import UsageError
from otel_exec.proctable import ProcessTable
from otel_exec.decode import Strings
from otel_exec.spans import SpanLineage, TraceparentTrust
from otel_exec.traceparent import parse_traceparent, remote_parent, trace_context_entries
from test_proctable import exec_ev

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")


class World:
    def __init__(self) -> None:
        self.table = ProcessTable()
        self.lineage = SpanLineage()

    def exec(self, pid: int, ppid: int, ticks: int, exec_id: str, env: list[str] = [], ts: int = 1000):
        """As the kernel reports it: the image parent's exec id comes along."""
        parent = self.table.get(ppid)
        ev = exec_ev(pid, ppid, ticks, exec_id, ts=ts, parent_exec_id=parent.exec_id if parent else "")
        ev.image_ppid = ppid
        ev.env = list(env)
        info, previous = self.table.on_exec(ev)
        self.lineage.on_exec(ev, info, previous, self.table.get(ppid))
        return info


def test_root_then_fork_exec_children_nest() -> None:
    w = World()
    sh = w.exec(10, 1, 5, "sh")
    assert sh.owns_span and sh.parent_span_id == b"" and len(sh.trace_id) == 16
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
    info, previous = w.table.on_exec(ev)
    w.lineage.on_exec(ev, info, previous, w.table.get(10))
    assert info.parent_span_id == b""  # the old image's span is gone: a new trace


def test_parse_traceparent_rules() -> None:
    assert parse_traceparent(TP) == (TRACE, SPAN, True)
    assert parse_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None  # all-zero trace id
    assert parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01") is None
    assert parse_traceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") is None
    assert parse_traceparent(TP + "-extra") is None  # version 00 has exactly four fields
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra") == \
        (TRACE, SPAN, False)  # a future version may append fields
    assert parse_traceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01") is None
    assert trace_context_entries(["TRACEPARENT=a", "TRACEPARENT=b", "BAGGAGE=x=1"]) == \
        {"TRACEPARENT": "a", "BAGGAGE": "x=1"}


def _world_trusting(spec: str) -> World:
    w = World()
    w.lineage = SpanLineage(TraceparentTrust.parse(spec), lambda v: v.replace("secret", "[REDACTED]"))
    return w


def _exec_as(w: World, uid: int, pid: int, ppid: int, ticks: int, exec_id: str, env: list[str]):
    parent = w.table.get(ppid)
    ev = exec_ev(pid, ppid, ticks, exec_id, parent_exec_id=parent.exec_id if parent else "")
    ev.image_ppid, ev.env, ev.uid = ppid, list(env), uid
    info, previous = w.table.on_exec(ev)
    w.lineage.on_exec(ev, info, previous, w.table.get(ppid))
    return info


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
    the context the agent read from the raw one (agent.Agent._env)."""
    from otel_exec.decode import Strings
    from otel_exec.redact import RedactionPolicy

    raw = [f"TRACEPARENT={TP}", "PATH=/bin"]
    emitted = Strings(RedactionPolicy("none").env(raw))
    emitted.trace_context = trace_context_entries(raw)
    assert emitted == []
    w = World()
    info = w.exec(10, 1, 5, "a")
    ev = exec_ev(11, 10, 6, "b", parent_exec_id="a")
    ev.image_ppid, ev.env = 10, emitted
    child, previous = w.table.on_exec(ev)
    w.lineage.on_exec(ev, child, previous, info)
    assert (child.trace_id, child.parent_span_id) == (TRACE, SPAN)


def test_tracestate_cut_boundary() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for n in (511, 512, 513, 2000):
        state = "a=" + "x" * (n - 2)
        parent = remote_parent({"TRACEPARENT": tp, "TRACESTATE": state})
        assert parent is not None and parent.trace_state == state[:512]
    assert remote_parent({"TRACEPARENT": tp}).trace_state == ""


def test_traceparent_flags_and_whitespace() -> None:
    base = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"
    assert [parse_traceparent(base + f)[2] for f in ("00", "01", "02", "03", "ff")] == [False, True, False, True, True]
    assert parse_traceparent(f"  {TP}\n") == (TRACE, SPAN, True)  # the value as a shell may leave it
    assert parse_traceparent(TP[:-1]) is None and parse_traceparent("") is None
    assert parse_traceparent("fe-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (TRACE, SPAN, True)


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
    assert (parent.trace_id, parent.span_id, parent.sampled, parent.trace_state) == (TRACE, SPAN, True, "a=1")
