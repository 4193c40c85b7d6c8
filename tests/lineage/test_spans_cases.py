"""Span lifecycle and trace context cases at their edges (issue 18's
mutation target for otel_exec/lineage/spans.py and traceparent.py): how
each span ends, the exact ids, counters and recorded values, and the
carrier's configuration errors. Synthetic events, no kernel."""
from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from otel_exec.errors import UsageError
from otel_exec.lineage.proctable import ProcessTable
from otel_exec.lineage.spans import TRUST_ANY, ProcessSpan, SpanLineage, TraceparentTrust, _digest
from otel_exec.lineage.traceparent import SAMPLED, TraceContextCarrier, parse_traceparent, remote_parent
from otel_exec.model.events import ExitEvent, Strings, UnreportedExecEvent
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from tests.helpers.events import exec_ev

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")
EXEC_A = "11223344556677889900aabbccddeeff"
EXEC_B = "ffeeddccbbaa00998877665544332211"


class Lineage:
    """A span lineage over a fresh table, keeping every span it ends."""

    def __init__(self, max_entries: int = 1000, **kwargs: Any) -> None:
        self.table = ProcessTable(max_entries)
        self.lineage = SpanLineage(self.table, **kwargs)
        self.ended: list[ProcessSpan] = []
        self.lineage.on_end.append(self.ended.append)

    def exec(self, pid: int, ppid: int, exec_id: str, *, ts: int = 1000, env: list[str] | None = None,
             uid: int = 0, parent_exec_id: str | None = None, observed: bool = False, path: str = "/usr/bin/x",
             start_ns: int = 0) -> ProcessSpan | None:
        parent = self.table.get(ppid)
        if parent_exec_id is None:
            parent_exec_id = parent.exec_id if parent else ""
        ev = exec_ev(pid, ppid, 5, exec_id, ts=ts, parent_exec_id=parent_exec_id, path=path)
        ev.env, ev.uid, ev.observed, ev.process_start_time = list(env or []), uid, observed, start_ns
        return self.lineage.on_exec(ev)

    def exit(self, pid: int, ts: int = 5000) -> None:
        self.lineage.on_exit(ExitEvent(ts, pid, 5, 0, None, False, "x"))

    def unreported(self, pid: int, ts: int = 4000) -> None:
        self.lineage.on_unreported_exec(UnreportedExecEvent(ts, pid, 5))


# --- ids ---------------------------------------------------------------

def test_a_root_span_s_ids_come_from_its_exec_id() -> None:
    w = Lineage()
    span = w.exec(10, 1, EXEC_A, ts=1234)
    assert span.trace_id == bytes.fromhex(EXEC_A)
    assert span.span_id == bytes.fromhex(EXEC_A[:16])
    assert (span.parent_span_id, span.trace_state, span.traceparent, span.untrusted_traceparent) == (b"", "", "", "")
    assert span.trace_flags == SAMPLED == 1
    assert (span.start_ns, span.end_ns, span.ended_by, span.incomplete) == (1234, 0, "", False)
    assert (span.attributes, span.late_identity) == ((), None)


def test_a_reexec_s_span_id_hashes_its_exec_time() -> None:
    w = Lineage()
    first = w.exec(10, 1, EXEC_A, ts=1000)
    again = w.exec(10, 1, EXEC_A, ts=2000)
    assert again.span_id == hashlib.blake2b(f"{EXEC_A}/2000".encode(), digest_size=8).digest()
    assert (again.trace_id, again.parent_span_id) == (first.trace_id, first.span_id)


def test_without_an_exec_id_the_ids_hash_pid_and_exec_time() -> None:
    w = Lineage()
    span = w.exec(10, 1, "", ts=777)
    assert span.trace_id == hashlib.blake2b(b"10@777", digest_size=16).digest()
    assert span.span_id == hashlib.blake2b(b"10@777", digest_size=8).digest()


def test_an_exec_id_that_is_not_hex_is_hashed_at_every_id_size() -> None:
    """The derivation (also _lineage_native.digest's reference) for any id
    size: an id that is not hex, short or long, is hashed to that size."""
    for odd in ("xyz0" * 8, "@1000", "\u0661" * 32):
        for size in range(1, 17):
            assert _digest(odd, 0, size) == hashlib.blake2b(odd.encode(), digest_size=size).digest(), (odd, size)


def test_an_all_zero_exec_id_gives_valid_ids() -> None:
    span = Lineage().exec(10, 1, "0" * 32)
    assert (span.trace_id, span.span_id) == (b"\1" * 16, b"\1" * 8)


# --- how spans end -----------------------------------------------------

def test_an_exit_ends_the_span_once_for_every_sink() -> None:
    w = Lineage()
    second: list[ProcessSpan] = []
    w.lineage.on_end.append(second.append)
    span = w.exec(10, 1, EXEC_A)
    w.exit(10, ts=9000)
    assert w.ended == second == [span]
    assert (span.end_ns, span.ended_by, span.incomplete) == (9000, "exit", False)
    w.exit(10, ts=9500)  # the table no longer knows it
    w.exit(99)  # never known
    assert w.ended == [span] and span.end_ns == 9000


def test_a_reexec_ends_the_previous_image_s_span_at_the_exec() -> None:
    w = Lineage()
    first = w.exec(10, 1, EXEC_A, ts=1000)
    second = w.exec(10, 1, EXEC_B, ts=3000)
    assert w.ended == [first]
    assert (first.end_ns, first.ended_by, first.incomplete) == (3000, "exec", False)
    w.exit(10, ts=6000)
    assert w.ended == [first, second] and second.ended_by == "exit"


def test_an_unreported_exec_ends_the_span() -> None:
    w = Lineage()
    span = w.exec(10, 1, EXEC_A)
    w.unreported(10, ts=4321)
    assert w.ended == [span]
    assert (span.end_ns, span.ended_by, span.incomplete) == (4321, "exec", False)
    w.unreported(10)  # gone from the table
    w.exit(10)  # its exit is ignored
    assert w.ended == [span]


def test_an_evicted_image_s_span_ends_incomplete_now() -> None:
    w = Lineage(max_entries=1)
    before = time.time_ns()
    span = w.exec(10, 1, EXEC_A)
    other = w.exec(20, 1, EXEC_B)
    after = time.time_ns()
    assert w.ended == [span] and w.table.evicted == 1
    assert (span.ended_by, span.incomplete) == ("evicted", True)
    assert before <= span.end_ns <= after
    w.exit(20)
    assert w.ended == [span, other]


def test_close_ends_the_open_spans_incomplete_once() -> None:
    w = Lineage()
    a = w.exec(10, 1, EXEC_A)
    b = w.exec(20, 1, EXEC_B)
    w.exit(20)
    before = time.time_ns()
    w.lineage.close()
    after = time.time_ns()
    assert w.ended == [b, a]
    assert (a.ended_by, a.incomplete) == ("agent_stopped", True)
    assert before <= a.end_ns <= after
    assert (b.ended_by, b.incomplete) == ("exit", False)
    w.lineage.close()
    assert w.ended == [b, a]


def test_images_without_a_span_end_quietly() -> None:
    """pid 1 found in /proc is in the table without a span: its re-exec,
    exit, unreported exec, eviction and the agent's stop end nothing."""
    w = Lineage()
    assert w.exec(1, 0, EXEC_A, observed=True) is None
    reexec = w.exec(1, 0, EXEC_B, ts=2000)
    assert reexec is not None and reexec.parent_span_id == b"" and w.ended == []
    w.exit(1)
    assert w.ended == [reexec]
    for end in (lambda: w.exit(1), lambda: w.unreported(1), w.lineage.close):
        w.exec(1, 0, EXEC_A, observed=True)
        end()
    assert w.ended == [reexec]
    small = Lineage(max_entries=1)
    small.exec(1, 0, EXEC_A, observed=True)
    span = small.exec(10, 1, EXEC_B)  # evicts pid 1's entry
    assert small.ended == [] and small.table.evicted == 1
    small.lineage.close()
    assert small.ended == [span]


# --- processes found in /proc -----------------------------------------

def test_an_observed_process_s_span_starts_with_the_process() -> None:
    w = Lineage()
    span = w.exec(2, 0, EXEC_A, observed=True, ts=5000, start_ns=1500)
    assert span is not None and span.start_ns == 1500
    assert span.process.seeded_from_proc is True and span.process.exec_time is None
    assert w.exec(30, 2, EXEC_B, observed=True, path="") is None  # a kernel thread: no executable
    assert w.exec(1, 0, "1" * 32, observed=True) is None
    reported = w.exec(40, 2, "2" * 32, ts=6000, start_ns=1)
    assert reported.start_ns == 6000 and reported.process.seeded_from_proc is False
    assert reported.process.exec_time == 6000


# --- parents -----------------------------------------------------------

def test_an_exec_without_its_parent_s_exec_id_takes_the_table_s() -> None:
    w = Lineage()
    parent = w.exec(10, 1, EXEC_A)
    ev = exec_ev(11, 10, 6, EXEC_B, parent_exec_id="")
    child = w.lineage.on_exec(ev)
    assert ev.parent_exec_id == EXEC_A
    assert (child.trace_id, child.parent_span_id) == (parent.trace_id, parent.span_id)
    kept = exec_ev(12, 10, 6, "3" * 32, parent_exec_id="another")
    assert w.lineage.on_exec(kept).parent_span_id == b"" and kept.parent_exec_id == "another"


def test_a_child_inherits_its_parent_s_state_and_flags() -> None:
    w = Lineage()
    unsampled = TP[:-2] + "02"
    app = w.exec(10, 1, EXEC_A, env=[f"TRACEPARENT={unsampled}", "TRACESTATE=k=v"])
    assert (app.trace_flags, app.trace_state, app.traceparent) == (2, "k=v", unsampled)
    child = w.exec(11, 10, EXEC_B, env=[f"TRACEPARENT={unsampled}", "TRACESTATE=other=1"])
    assert (child.trace_id, child.parent_span_id, child.trace_state, child.trace_flags) == \
        (TRACE, app.span_id, "k=v", 2)
    assert child.traceparent == unsampled
    # A different TRACEPARENT in a child is the application's: followed.
    other = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    joined = w.exec(12, 10, "4" * 32, env=[f"TRACEPARENT={other}"])
    assert (joined.trace_id, joined.parent_span_id, joined.trace_state, joined.trace_flags) == \
        (b"\xaa" * 16, b"\xbb" * 8, "", 1)


# --- TRACEPARENT counters and records ---------------------------------

def test_counters_start_at_zero_and_count_each_case() -> None:
    w = Lineage(trust=TraceparentTrust.parse("root"))
    w.exec(10, 1, EXEC_A)
    assert (w.lineage.malformed_traceparent, w.lineage.untrusted_traceparent) == (0, 0)
    for pid in (11, 12):
        w.exec(pid, 1, str(pid) * 16, env=["TRACEPARENT=bad"])
    for pid in (13, 14, 15):
        w.exec(pid, 1, str(pid) * 16, env=[f"TRACEPARENT={TP}"], uid=1000)
    assert (w.lineage.malformed_traceparent, w.lineage.untrusted_traceparent) == (2, 3)


def test_an_untrusted_traceparent_is_recorded_cut_and_scanned() -> None:
    scanned: list[str] = []

    def scrub(value: str) -> str:
        scanned.append(value)
        return value.replace("s", "*")

    w = Lineage(trust=TraceparentTrust.parse("none"), scrub=scrub)
    long = "s" * 300
    span = w.exec(10, 1, EXEC_A, env=[f"TRACEPARENT={long}"], uid=0)
    assert scanned == ["s" * 256]
    assert span.untrusted_traceparent == "*" * 256 and span.traceparent == long
    assert span.parent_span_id == b"" and w.lineage.malformed_traceparent == 0


def test_the_default_lineage_trusts_anyone_and_keeps_values() -> None:
    w = Lineage()
    assert w.lineage.trust is TRUST_ANY and TRUST_ANY == TraceparentTrust(True, frozenset())
    span = w.exec(10, 1, EXEC_A, env=[f"TRACEPARENT={TP}", "TRACESTATE=k=s"], uid=12345)
    assert (span.trace_id, span.parent_span_id, span.trace_state) == (TRACE, SPAN, "k=s")


def test_a_custom_trace_context_reader_is_used() -> None:
    carrier = TraceContextCarrier("MY_TP", "MY_TS")
    w = Lineage(trace_context=carrier.entries)
    span = w.exec(10, 1, EXEC_A, env=[f"TRACEPARENT={TP}", f"MY_TP={TP}", "MY_TS=a=1"])
    assert (span.trace_id, span.parent_span_id, span.trace_state, span.traceparent) == (TRACE, SPAN, "a=1", TP)


def test_the_context_kept_on_the_env_block_before_redaction_is_followed() -> None:
    """The policy stage keeps an env's trace context on its decoded block
    (events.Strings) before redaction, which may leave no variable
    (--env-capture none): the span follows the context kept, not what a
    reader finds in the variables left."""
    carrier = TraceContextCarrier()
    policy = ExecPolicy(RedactionPolicy(env_capture="none", trace_context_names=carrier.names), 1, carrier.entries)
    w = Lineage(trace_context=lambda env: carrier.entries(list(env)))  # the variables themselves, no block
    ev = exec_ev(10, 1, 5, EXEC_A, ts=1000)
    ev.env = Strings([f"TRACEPARENT={TP}", "TRACESTATE=k=s", "HOME=/root"])
    policy.apply(ev)
    assert ev.env == []
    span = w.lineage.on_exec(ev)
    assert span is not None
    assert (span.trace_id, span.parent_span_id, span.trace_state, span.traceparent) == (TRACE, SPAN, "k=s", TP)


# --- TraceparentTrust --------------------------------------------------

def test_trust_spec_parts_and_bounds() -> None:
    assert TraceparentTrust.parse("any") == TraceparentTrust(True, frozenset())
    assert TraceparentTrust.parse("none") == TraceparentTrust(False, frozenset())
    assert TraceparentTrust.parse(" root , 1000 ") == TraceparentTrust(False, frozenset({0, 1000}))
    assert TraceparentTrust.parse("4294967294") == TraceparentTrust(False, frozenset({2**32 - 2}))
    assert not TraceparentTrust(False, frozenset()).trusts(0)
    assert TraceparentTrust(True, frozenset()).trusts(7)
    with pytest.raises(UsageError) as err:
        TraceparentTrust.parse("root,bob")
    assert str(err.value) == ("--trust-traceparent 'root,bob': must be any, none, root, or user ids "
                              "separated by commas (root,1000)")


# --- traceparent.py ----------------------------------------------------

def test_the_default_carrier_names_the_w3c_variables() -> None:
    carrier = TraceContextCarrier()
    assert carrier.names == {"TRACEPARENT": "TRACEPARENT", "TRACESTATE": "TRACESTATE", "BAGGAGE": "BAGGAGE"}
    assert carrier.entries(["BAGGAGE=b", "TRACESTATE=s", f"TRACEPARENT={TP}"]) == \
        {"BAGGAGE": "b", "TRACESTATE": "s", "TRACEPARENT": TP}


def test_a_renamed_carrier_keys_values_by_w3c_field() -> None:
    carrier = TraceContextCarrier("_tp1", "Ts_2")
    assert carrier.names == {"TRACEPARENT": "_tp1", "TRACESTATE": "Ts_2", "BAGGAGE": "BAGGAGE"}
    env = ["TRACEPARENT=no", "_tp1=a", "Ts_2", "Ts_2=b=1", "Ts_2=late", "BAGGAGE=c", "_tp1x=0"]
    assert carrier.entries(env) == {"TRACEPARENT": "a", "TRACESTATE": "b=1", "BAGGAGE": "c"}
    swapped = TraceContextCarrier("TRACESTATE", "TRACEPARENT")  # distinct names: allowed
    assert swapped.entries(["TRACESTATE=a", "TRACEPARENT=b"]) == {"TRACEPARENT": "a", "TRACESTATE": "b"}
    block = Strings(["_tp1=x"])
    first = carrier.entries(block)
    assert block.trace_context is first and carrier.entries(block) is first


@pytest.mark.parametrize("flag,kwargs", [
    ("--traceparent-env", {"traceparent": "1TP"}), ("--traceparent-env", {"traceparent": "TP-X"}),
    ("--traceparent-env", {"traceparent": ""}), ("--tracestate-env", {"tracestate": "TS X"}),
    ("--tracestate-env", {"tracestate": "TS\n"}),
])
def test_a_carrier_name_must_be_a_variable_name(flag: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(UsageError) as err:
        TraceContextCarrier(**kwargs)
    name = next(iter(kwargs.values()))
    assert str(err.value) == (f"{flag} {name!r}: not an environment variable name (letters, digits, "
                              "_, not starting with a digit)")


@pytest.mark.parametrize("traceparent,tracestate", [("X", "X"), ("BAGGAGE", "TRACESTATE"),
                                                     ("TRACEPARENT", "BAGGAGE")])
def test_each_field_needs_a_variable_of_its_own(traceparent: str, tracestate: str) -> None:
    with pytest.raises(UsageError) as err:
        TraceContextCarrier(traceparent, tracestate)
    assert str(err.value) == (f"--traceparent-env {traceparent}, --tracestate-env {tracestate}: each field "
                              "needs a variable of its own (BAGGAGE is taken)")


def test_traceparent_versions_and_fields_exactly() -> None:
    ids = "-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"
    assert parse_traceparent("00" + ids + "0a") == (TRACE, SPAN, 10)
    assert parse_traceparent("01" + ids + "01") == (TRACE, SPAN, 1)  # a later version, nothing appended
    assert parse_traceparent("00" + ids + "01-") is None
    assert parse_traceparent("ff" + ids + "01-x") is None
    assert parse_traceparent("00-" + "0" * 31 + "1-" + "0" * 15 + "1-01") == (b"\0" * 15 + b"\1", b"\0" * 7 + b"\1", 1)
    parent = remote_parent({"TRACEPARENT": " 00" + ids + "00 ", "TRACESTATE": "a=1,b=2"})
    assert parent is not None and (parent.trace_id, parent.span_id, parent.flags, parent.trace_state) == \
        (TRACE, SPAN, 0, "a=1,b=2")
