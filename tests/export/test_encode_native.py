"""The native encoder (otel_exec/export/otlp/_encode_native.c) against its
reference, the Python of encode.py: fed the same execs and ended spans, both
give byte-identical OTLP (the exec's ids, its log record, its span, its exit
record), or both raise. Inputs: a hostile corpus (ids of every length and
none, pids at every varint boundary and beyond 64 bits, times past 9999,
lone surrogates, kernel threads without an executable, untrusted
TRACEPARENTs, late identities), hypothesis strategies over the same fields,
and the records of a real storm captured through the kernel.

The extension is built in place (`.venv/bin/python setup.py build_ext
--inplace`, or by the install); its absence is a failure here, not a skip.
The test sets it up itself, so it also runs under OTEL_EXEC_NATIVE=0, where
the agent does not use it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_exec.export.otlp import encode
from otel_exec.host.executables import Slot
from otel_exec.lineage.proctable import ProcessTable
from otel_exec.lineage.spans import ProcessSpan, SpanLineage
from otel_exec.model.events import ExecEvent, SharedExec
from otel_exec.model.executable import COMPLETE, PENDING, TOO_LARGE, ExecutableIdentity
from otel_exec.model.process import ProcessInfo
from tests.helpers.agent_run import AgentRun, kernel_available, marked, marked_env, new_mark
from tests.helpers.events import sample_exec

try:
    from otel_exec.export.otlp import _encode_native as native
except ImportError:  # pragma: no cover - a failure, with the way out
    pytest.fail("otel_exec.export.otlp._encode_native is not built: run "
                "`.venv/bin/python setup.py build_ext --inplace`", pytrace=False)

SPAN_SETS = (encode.SPAN_SLIM, encode.SPAN_FULL, encode.SPAN_FULL_ENV)
VARINT_EDGES = [0, 1, 127, 128, 2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**28, 2**32 - 1, 2**35, 2**63 - 1, 2**64 - 1]
IDENTITIES = [None, ExecutableIdentity(COMPLETE, size=35664, sha256="c7" * 32, htlhash="72" * 16,
                                       gnu_build_id="c8" * 20),
              ExecutableIdentity(PENDING), ExecutableIdentity(TOO_LARGE, size=2**40, htlhash="ab" * 16)]


@pytest.fixture(autouse=True)
def native_set_up() -> None:
    """encode.setup_native in each test rather than once at import: a
    constant or call-back handed over wrongly makes the native bytes differ
    from the reference's, which the test then catches (a mutation tool
    counts only what runs inside a test)."""
    encode.setup_native(native)


def outcome(f: Callable[..., Any], *args: Any) -> Any:
    """What f returns, or the fact that it raised."""
    try:
        return f(*args)
    except Exception:  # noqa: BLE001 - both sides must refuse the same input, however they say it
        return "raised"


def encodings(ev: ExecEvent, span_set: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """exec_attributes (ids, shared part, body) with the native ids and with the reference's."""
    def attrs() -> Any:
        encode._shared_encodings.clear()
        enc = encode.exec_attributes(ev, span_set)
        return enc.ids.log, enc.ids.span, enc.common.log, enc.common.span, enc.body

    monkeypatch.setattr(encode, "_native_exec_ids", native.exec_ids)
    with_native = outcome(attrs)
    monkeypatch.setattr(encode, "_native_exec_ids", None)
    return with_native, outcome(attrs)


def check_exec(ev: ExecEvent, span: ProcessSpan, span_set: int, observed_ns: int,
               monkeypatch: pytest.MonkeyPatch) -> None:
    """The exec's encodings and records, then its span's and exit record's, both ways."""
    got, want = encodings(ev, span_set, monkeypatch)
    assert got == want
    if want == "raised":
        return
    check_exec_record(ev, span, span_set, observed_ns)  # sets span.attributes, as the agent's exec_record does
    check_end(span, observed_ns)


def check_exec_record(ev: ExecEvent, span: ProcessSpan, span_set: int, observed_ns: int) -> None:
    """exec_record (the record and the span's attributes it sets), both
    ways: with the shared part not yet encoded (the native one hands it to
    the reference) and encoded (the native one encodes it all)."""
    def record(f: Callable[..., bytes]) -> Any:
        span.attributes = ()
        return outcome(f, ev, span, span_set, encode._DEFAULT_LIMITS, observed_ns), span.attributes

    encode._shared_encodings.clear()
    want = record(encode._py_exec_record)
    encode._shared_encodings.clear()
    assert record(native.exec_record) == want
    assert record(native.exec_record) == want
    assert record(encode._py_exec_record) == want


def check_end(span: ProcessSpan, observed_ns: int) -> None:
    assert outcome(native.span, span) == outcome(encode._py_span, span)
    for repeat_derived in (False, True):  # compact and --record-attributes full
        assert outcome(native.exit_record, span, observed_ns, repeat_derived) == \
            outcome(encode._py_exit_record, span, observed_ns, repeat_derived)
    assert outcome(native.exit_record, span, observed_ns) == outcome(encode._py_exit_record, span, observed_ns)


def span_of(ev: ExecEvent, **over: Any) -> ProcessSpan:
    info = ProcessInfo(ev.host_pid, ev.host_ppid, 100, ev.exec_id, ev.parent_exec_id, ev.comm, ev.pathname,
                       ev.argv, False, ev.timestamp, exit_code=0)
    fields = dict(process=info, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 8,
                  trace_state="", traceparent="", untrusted_traceparent="", start_ns=ev.timestamp,
                  end_ns=ev.timestamp + 1_000_000, ended_by="exit")
    fields.update(over)
    return ProcessSpan(**fields)  # type: ignore[arg-type]


# -- the hostile corpus -------------------------------------------------------

HOSTILE_EXECS: list[dict[str, Any]] = [
    {},
    *({"host_pid": n, "host_ppid": n, "pid": n, "ppid": n} for n in VARINT_EDGES),
    *({"host_pid": n, "pid": 1, "ppid": 0} for n in VARINT_EDGES),
    {"host_pid": 2**64}, {"host_pid": -1}, {"pid": -5}, {"host_ppid": 2**70},
    {"exec_id": ""}, {"exec_id": "e" * 16}, {"parent_exec_id": ""}, {"exec_id": "é" * 16},  # 32 bytes, 16 chars
    {"exec_id": "\udcff" * 32}, {"parent_exec_id": "\ud800" + "f" * 31},
    {"process_start_time": 0}, {"process_start_time": 2**64 - 1}, {"process_start_time": 253_402_300_800 * 10**9},
    {"process_start_time": -1}, {"process_start_time": 999 * 10**9}, {"timestamp": 2**64 - 1},
    {"timestamp": -1}, {"pathname": "", "comm": "kworker/0:1"}, {"pathname": "/x/\udcff\n (deleted)"},
    {"interp": "/bin/sh", "cmdpath": "./script"}, {"unavailable": ("pathname", "exec_id", "argv")},
    {"container_id": None}, {"argv": []}, {"env": []},
]
HOSTILE_SPANS: list[dict[str, Any]] = [
    {}, {"parent_span_id": b""}, {"trace_state": "k=v,ünï=cödé"}, {"trace_state": "\udcff"},
    {"untrusted_traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}, {"trace_flags": 0}, {"trace_flags": 255},
    {"trace_flags": 256}, {"end_ns": 0}, {"start_ns": 2**64 - 1}, {"ended_by": "evicted", "incomplete": True},
    {"ended_by": "agent_stopped", "incomplete": True}, {"ended_by": "exec"},
    {"late_identity": Slot()}, {"late_identity": Slot(IDENTITIES[1])}, {"trace_id": b"\x00" * 15},
    {"span_id": b"x" * 9}, {"parent_span_id": b"\x04" * 7},
]
PROCESS_ENDS: list[dict[str, Any]] = [
    {"exit_code": 0}, {"exit_code": 3}, {"exit_code": 255}, {"exit_code": None, "signal": 9},
    {"exit_code": None, "signal": 64}, {"exit_code": None, "signal": None}, {"exe": ""}, {"exe": "", "comm": ""},
    {"exec_id": "short"}, {"exec_id": "\udcff" * 32}, {"pid": 2**40}, {"pid": 2**64 - 1},
]


def case_ids(cases: list[dict[str, Any]]) -> list[str]:
    """The cases' test ids: the same in every process and plain words (a
    Slot's repr holds its address; a "/" or an escaped surrogate in an id
    can fail a mutation tool that names the tests to run by id)."""
    return [f"{i}-" + re.sub(r"[^A-Za-z0-9_]+", "-", repr(over)).strip("-")[:60] for i, over in enumerate(cases)]


@pytest.mark.parametrize("over", HOSTILE_EXECS, ids=case_ids(HOSTILE_EXECS))
@pytest.mark.parametrize("identity", IDENTITIES, ids=["none", "complete", "pending", "too_large"])
def test_the_hostile_corpus_encodes_the_same(over: dict[str, Any], identity: ExecutableIdentity | None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ev = sample_exec(**{"executable_identity": identity, **over})
    for span_set in SPAN_SETS:
        check_exec(ev, span_of(ev), span_set, 1_700_000_000_000_000_000, monkeypatch)


def test_creation_times_within_one_second_and_across_encode_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native encoder keeps the formatted seconds of the last creation
    time: every millisecond of that second, the next second, and a time it
    cannot format in between (the kept seconds must not leak into it nor
    be lost by it) give the reference's bytes, in this order."""
    second = 1_700_000_000 * 10**9
    for start in (second, second + 999_999_999, second + 1, 253_402_300_800 * 10**9, second + 5_000_000,
                  999 * 10**9, 0, second + 10**9 + 7_000_000, second + 10**9, second, second + 123_456_789):
        ev = sample_exec(process_start_time=start)
        check_exec_record(ev, span_of(ev), encode.SPAN_SLIM, 1_700_000_000_000_000_000)


@pytest.mark.parametrize("over", HOSTILE_SPANS + [{"process_end": end} for end in PROCESS_ENDS],
                         ids=case_ids(HOSTILE_SPANS + [{"process_end": end} for end in PROCESS_ENDS]))
def test_hostile_spans_end_the_same(over: dict[str, Any]) -> None:
    ev = sample_exec()
    end = over.pop("process_end", {})
    span = span_of(ev, **over)
    for key, value in end.items():
        setattr(span.process, key, value)
    span.attributes = encode.exec_attributes(ev).span_attrs()
    check_end(span, 2**63)


def test_endings_in_a_row_encode_the_same() -> None:
    """The native encoder keeps the last ending it found: spans that end
    alike one after the other, then differ in one of the four values that
    make an ending (each in turn), then end as before, all give the
    reference's bytes."""
    ev = sample_exec()
    span = span_of(ev)
    span.attributes = encode.exec_attributes(ev).span_attrs()
    endings = [("exit", False, 0, None), ("exit", False, 0, None), ("exit", False, 3, None), ("exit", False, 3, None),
               ("exit", False, None, 9), ("exit", False, None, 15), ("exit", True, None, 15),
               ("evicted", True, None, 15), ("exit", False, 2**70, None), ("exit", False, 2**70, None),
               ("exit", False, 0, None)]
    for ended_by, incomplete, exit_code, signo in endings:
        span.ended_by, span.incomplete, span.process.exit_code, span.process.signal = \
            ended_by, incomplete, exit_code, signo
        check_end(span, 2**63)


def test_the_caches_are_shared_and_filled_by_either() -> None:
    """A span name, an ending and an executable name the native encoder
    met first are the reference's afterwards, and the other way round."""
    ev = sample_exec(pathname="/opt/native-first")
    span = span_of(ev)
    span.process.exe, span.process.exit_code = "/opt/native-first", 77
    encode._names.pop("/opt/native-first", None)
    encode._exe_names.pop("/opt/native-first", None)
    encode._endings.pop(("exit", False, 77, None), None)
    first = native.span(span), native.exit_record(span, 5, True)
    assert "/opt/native-first" in encode._names and "/opt/native-first" in encode._exe_names
    assert ("exit", False, 77, None) in encode._endings
    assert first == (encode._py_span(span), encode._py_exit_record(span, 5, True))


# -- hypothesis ---------------------------------------------------------------

ints = st.one_of(st.sampled_from(VARINT_EDGES), st.integers(0, 2**32), st.integers(-2**64, 2**65))
ids = st.one_of(st.text("0123456789abcdef", min_size=32, max_size=32), st.text(max_size=40))
texts = st.text(max_size=30)
exec_overrides = st.fixed_dictionaries({
    "host_pid": ints, "host_ppid": ints, "pid": ints, "ppid": ints, "exec_id": ids, "parent_exec_id": ids,
    "process_start_time": st.one_of(st.integers(0, 2**64 - 1), ints), "timestamp": st.integers(0, 2**64 - 1),
    "pathname": texts, "comm": texts, "interp": texts, "cmdpath": texts,
    "argv": st.lists(texts, max_size=4), "env": st.lists(texts, max_size=4),
    "executable_identity": st.sampled_from(IDENTITIES),
})
span_overrides = st.fixed_dictionaries({
    "trace_flags": st.integers(0, 255), "trace_state": texts, "untrusted_traceparent": st.sampled_from(["", "x"]),
    "parent_span_id": st.sampled_from([b"", b"\x07" * 8]), "start_ns": st.integers(0, 2**64 - 1),
    "end_ns": st.integers(0, 2**64 - 1), "ended_by": st.sampled_from(["exit", "exec", "evicted", "agent_stopped"]),
    "incomplete": st.booleans(), "late_identity": st.sampled_from([None, Slot(), Slot(IDENTITIES[1])]),
})
endings = st.fixed_dictionaries({"exit_code": st.one_of(st.none(), st.integers(0, 255)),
                                 "signal": st.one_of(st.none(), st.integers(1, 70)), "exe": texts})


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(over=exec_overrides, span_over=span_overrides, end=endings, span_set=st.sampled_from(SPAN_SETS),
       observed_ns=st.integers(0, 2**64 - 1))
def test_random_execs_and_spans_encode_the_same(over: dict[str, Any], span_over: dict[str, Any],
                                                end: dict[str, Any], span_set: int, observed_ns: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ev = sample_exec(**over)
    ev.shared = SharedExec(())
    ev.shared.repeats = True  # as the decoder marks a repeated command's: its encoding is kept
    span = span_of(ev, **span_over)
    for key, value in end.items():
        setattr(span.process, key, value)
    check_exec(ev, span, span_set, observed_ns, monkeypatch)


# -- a real storm, through the kernel ----------------------------------------

def _event(record: dict[str, Any]) -> ExecEvent:
    """An ExecEvent again from the console's JSON line of it."""
    for name in ("executable_identity", "script_identity"):
        if record.get(name) is not None:
            record[name] = ExecutableIdentity(**record[name])
    record["unavailable"] = tuple(record.get("unavailable", ()))
    return ExecEvent(**record)


@pytest.mark.kernel
def test_a_real_storm_encodes_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execs of a shell loop (and a failing and a killed one) as the agent
    decoded them, through the real lineage to spans; every record both ways."""
    reason = kernel_available()
    if reason:
        pytest.fail(reason)
    run = AgentRun(tmp_path)
    mark = new_mark()
    try:
        script = "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; ls / >/dev/null; done; sh -c 'exit 3'; " \
                 "sh -c 'kill -9 $$'; cat /etc/hostname >/dev/null"
        subprocess.run(["/bin/sh", "-c", script], env=marked_env(mark, LONG="x" * 3000))
        records = run.find(marked(mark), count=24, timeout=20)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert len(records) == 24  # sh, ten true, ten ls, two sh -c, cat
    lineage = SpanLineage(ProcessTable())
    ended: list[ProcessSpan] = []
    lineage.on_end.append(ended.append)
    opened = []
    for record in records:
        ev = _event(json.loads(json.dumps(record)))
        span = lineage.on_exec(ev)
        assert span is not None
        opened.append((ev, span))
    for i, (ev, span) in enumerate(opened):
        span.process.exit_code, span.process.signal = (None, 9) if i % 7 == 3 else (i % 4, None)
        for span_set in SPAN_SETS:
            check_exec(ev, span, span_set, ev.timestamp + 1000, monkeypatch)
    lineage.close()
    assert ended
    for span in ended:
        check_end(span, os.getpid())


def test_more_span_classes_than_the_slot_table_holds_encode_the_same() -> None:
    """The native encoder finds where a class keeps an attribute in a table
    by (class, name), two ways per index: thousands of span classes (and
    their reads of every name) collide, move to the other way and evict
    each other, and each span still gives the reference's bytes, also one
    whose class hides a slot behind a property."""
    ev = sample_exec()
    attributes = encode.exec_attributes(ev).span_attrs()
    classes: list[type[ProcessSpan]] = []
    for i in range(6000):
        if i % 97 == 0:
            class Hidden(ProcessSpan):
                __slots__ = ()

                @property  # type: ignore[misc]
                def trace_state(self) -> str:
                    return "hidden=1"

                @trace_state.setter
                def trace_state(self, value: str) -> None:
                    pass

            classes.append(Hidden)
        else:
            class Plain(ProcessSpan):
                __slots__ = ()

            classes.append(Plain)
    spans = []
    for i, cls in enumerate(classes):
        span = span_of(ev, end_ns=ev.timestamp + i, trace_flags=i & 1, start_ns=ev.timestamp - i)
        span.__class__ = cls
        span.attributes = attributes
        spans.append(span)
    for _ in range(2):  # the second round after every class was seen
        for i, span in enumerate(spans):
            assert native.span(span) == encode._py_span(span), i
            assert native.exit_record(span, i, False) == encode._py_exit_record(span, i, False), i
