"""Executable identity in OTLP records and console lines: the keys, which
ones appear for each status, and the late values on a span."""
from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from testkit.exe_reference import exec_event
from otel_exec.export import console
from otel_exec.export.console import exec_to_dict
from otel_exec.export.otlp import attributes
from otel_exec.export.otlp import encode
from otel_exec.host.executables import Slot
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.process import ProcessInfo
from otel_exec.model.events import SharedExec
from otel_exec.model.executable import BY_PATH, COMPLETE, PENDING, TOO_LARGE, UNREADABLE, ExecutableIdentity

FULL = ExecutableIdentity(COMPLETE, size=1234, sha256="ab" * 32, htlhash="cd" * 16, gnu_build_id="ef" * 20,
                          go_build_id="go/id")
SCRIPT = ExecutableIdentity(BY_PATH, size=17, sha256="12" * 32, htlhash="34" * 16)


@pytest.fixture(autouse=True)
def fresh_memos() -> None:
    """The encoder and the console remember the identities they encoded; each
    test starts without them (a mutation tool forks its workers from a
    process that already filled them)."""
    for memo in (encode._identities, encode._exec_identities, console._identity_dicts):
        memo.clear()


def info() -> ProcessSpan:
    """The span of a process image (its ProcessInfo in .process)."""
    return ProcessSpan(ProcessInfo(1, 1, 0, "a" * 32, "b" * 32, "x", "/bin/x", ["x"], False, 1),
                       trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"", trace_state="",
                       traceparent="", untrusted_traceparent="", start_ns=1)


def log_attributes(identity: ExecutableIdentity | None, script: ExecutableIdentity | None = None,
                   shared: bool = True) -> dict[str, object]:
    ev = exec_event("/bin/true")
    ev.exec_id, ev.parent_exec_id = "a" * 32, "b" * 32
    ev.executable_identity, ev.script_identity = identity, script
    if shared:
        ev.shared = SharedExec(())
    rec = encode.log_record(ev, encode.exec_attributes(ev), info(), 2)
    lr = ExportLogsServiceRequest.FromString(encode.export_request(b"", [rec])).resource_logs[0].scope_logs[0] \
        .log_records[0]
    keys = [kv.key for kv in lr.attributes]
    assert len(keys) == len(set(keys))
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in lr.attributes}


def identity_part(a: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in a.items() if k.startswith(("process.executable.build_id.", "otel_exec.executable.",
                                                         "otel_exec.script."))}


def test_complete_identity_keys() -> None:
    for shared in (True, False):
        assert identity_part(log_attributes(FULL, shared=shared)) == {
            "process.executable.build_id.gnu": "ef" * 20, "process.executable.build_id.go": "go/id",
            "process.executable.build_id.htlhash": "cd" * 16, "otel_exec.executable.sha256": "ab" * 32,
            "otel_exec.executable.size": 1234}


def test_flags_and_partial_values() -> None:
    assert identity_part(log_attributes(ExecutableIdentity(PENDING))) == \
        {"otel_exec.executable.identity_status": "pending"}
    assert identity_part(log_attributes(ExecutableIdentity(UNREADABLE))) == \
        {"otel_exec.executable.identity_status": "unreadable"}
    big = ExecutableIdentity(TOO_LARGE, size=10**9, htlhash="cd" * 16, gnu_build_id="ef" * 20)
    assert identity_part(log_attributes(big)) == {
        "process.executable.build_id.gnu": "ef" * 20, "process.executable.build_id.htlhash": "cd" * 16,
        "otel_exec.executable.size": 10**9, "otel_exec.executable.identity_status": "too_large"}


def test_identity_off_adds_nothing() -> None:
    assert identity_part(log_attributes(None)) == {}


def test_script_alongside_its_interpreter() -> None:
    a = identity_part(log_attributes(FULL, SCRIPT))
    assert {k: v for k, v in a.items() if k.startswith("otel_exec.script.")} == {
        "otel_exec.script.sha256": "12" * 32, "otel_exec.script.htlhash": "34" * 16, "otel_exec.script.size": 17,
        "otel_exec.script.identity_status": "by_path"}
    assert a["otel_exec.executable.sha256"] == "ab" * 32


def test_the_same_object_is_encoded_once_and_a_new_one_anew() -> None:
    first = log_attributes(FULL)
    again = log_attributes(FULL)
    other = ExecutableIdentity(COMPLETE, size=1, sha256="00" * 32, htlhash="11" * 16)
    assert first == again
    assert identity_part(log_attributes(other)) == {"process.executable.build_id.htlhash": "11" * 16,
                                                    "otel_exec.executable.sha256": "00" * 32,
                                                    "otel_exec.executable.size": 1}


def span_attributes(late: Slot | None, pending_on_record: bool = True) -> dict[str, object]:
    i = info()
    if pending_on_record:
        i.attributes = (encode.Attrs.of([encode._kv(attributes.EXECUTABLE_IDENTITY_STATUS, "pending")]).span,)
    i.late_identity = late
    i.end_ns, i.ended_by = 5, "exit"
    raw = encode.span(i)
    span = ExportTraceServiceRequest.FromString(encode.export_request(b"", [raw])) \
        .resource_spans[0].scope_spans[0].spans[0]
    keys = [kv.key for kv in span.attributes]
    assert len(keys) == len(set(keys)), keys
    return identity_part({kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes})


def test_late_values_on_the_span() -> None:
    assert span_attributes(Slot(FULL)) == {
        "process.executable.build_id.gnu": "ef" * 20, "process.executable.build_id.go": "go/id",
        "process.executable.build_id.htlhash": "cd" * 16, "otel_exec.executable.sha256": "ab" * 32,
        "otel_exec.executable.size": 1234, "otel_exec.executable.identity_status": "pending",
        "otel_exec.executable.identity_late": "complete"}
    assert span_attributes(Slot(ExecutableIdentity(UNREADABLE))) == {
        "otel_exec.executable.identity_status": "pending", "otel_exec.executable.identity_late": "unreadable"}


def test_still_pending_at_the_end_adds_nothing() -> None:
    assert span_attributes(Slot()) == {"otel_exec.executable.identity_status": "pending"}
    assert span_attributes(None, pending_on_record=False) == {}


def test_console_line() -> None:
    ev = exec_event("/bin/true")
    assert exec_to_dict(ev)["executable_identity"] is None and exec_to_dict(ev)["script_identity"] is None
    ev.executable_identity, ev.script_identity = ExecutableIdentity(PENDING), SCRIPT
    line = exec_to_dict(ev)
    assert line["executable_identity"] == {"status": "pending"}
    assert line["script_identity"] == {"status": "by_path", "size": 17, "sha256": "12" * 32, "htlhash": "34" * 16}
    ev.executable_identity = FULL
    assert exec_to_dict(ev)["executable_identity"] == {
        "status": "complete", "size": 1234, "sha256": "ab" * 32, "htlhash": "cd" * 16, "gnu_build_id": "ef" * 20,
        "go_build_id": "go/id"}
