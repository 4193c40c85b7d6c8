"""The hand-written OTLP encoding, decoded with the official generated classes."""
from __future__ import annotations

import ast
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_exec.export.otlp import attributes, encode
from otel_exec.export.otlp.resource import resource_attributes
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.model.events import ExecEvent, SharedExec
from otel_exec.model.executable import BY_PATH, TOO_LARGE, ExecutableIdentity
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.process import ProcessInfo
from tests.helpers.events import attrs, sample_exec


def span_for(ev: ExecEvent) -> ProcessSpan:
    info = ProcessInfo(ev.host_pid, ev.host_ppid, ev.start_ticks, ev.exec_id, ev.parent_exec_id, ev.comm,
                       ev.pathname, ev.argv, False, ev.timestamp)
    return ProcessSpan(info, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 8,
                       trace_state="k=v", traceparent="", untrusted_traceparent="", start_ns=ev.timestamp)


def ended(span: ProcessSpan, end_ns: int, reason: str, incomplete: bool = False) -> bytes:
    """encode.span of `span` ended as span lineage ends it."""
    span.end_ns, span.ended_by, span.incomplete = end_ns, reason, incomplete
    return encode.span(span)


def test_log_record_round_trip() -> None:
    ev = sample_exec()
    span = span_for(ev)
    rec = encode.log_record(ev, encode.exec_attributes(ev), span, 1_700_000_001_000_000_000)
    req = ExportLogsServiceRequest.FromString(encode.export_request(b"", [rec] * 2))
    scope = req.resource_logs[0].scope_logs[0]
    assert scope.scope.name == "otel-exec"
    assert len(scope.log_records) == 2
    lr = scope.log_records[0]
    assert lr.time_unix_nano == ev.timestamp
    assert lr.observed_time_unix_nano == 1_700_000_001_000_000_000
    assert lr.severity_number == 9 and lr.severity_text == "INFO"
    assert lr.event_name == "otel_exec.process.exec"
    assert lr.body.string_value == "sudo -u 'x y' 'caf\u00e9'"  # shlex.join quoting
    assert lr.trace_id == b"\x01" * 16 and lr.span_id == b"\x02" * 8
    keys = [kv.key for kv in lr.attributes]
    assert len(keys) == len(set(keys))  # OTLP forbids duplicate keys, even for an env key set twice
    a = attrs(lr.attributes)
    assert a["process.pid"] == 4242 and a["process.parent_pid"] == 4000 and a["process.vpid"] == 7
    assert a["process.executable.path"] == "/usr/bin/sudo" and a["process.executable.name"] == "sudo"
    # process.command is argv[0]: a compact record (the default) leaves it out (test_encode_cases.py)
    assert "process.command" not in a and a["process.command_args"] == ev.argv
    assert "process.args_count" not in a  # the record is not cut: len(process.command_args), the kernel's argc
    assert (a["process.user.id"], a["process.real_user.id"]) == (0, 1000)
    assert a["process.working_directory"] == "/home/u"
    assert a["process.creation.time"] == "2023-11-14T22:13:20.000Z"
    assert a["process.interactive"] is True
    assert a["process.linux.cgroup"] == "0::" + ev.cgroup_path
    assert a["container.id"] == "ab" * 32
    assert a["file.inode"] == "12345" and a["file.mode"] == "4755"
    assert "file.path" not in a  # the executable's: process.executable.path
    # The environment packed (--env-attributes 0, the default): one entry per key, the first value.
    assert a["otel_exec.env.rest"] == ["HOME=/root", "API_TOKEN=[REDACTED]"]
    assert not [k for k in a if k.startswith(attributes.ENV_PREFIX)]
    assert a["otel_exec.env_entries_without_value"] == ["NOEQUALS"]
    per_variable = encode.exec_attributes(ev, limits=RecordLimits(env_attributes=48))
    (lr,) = ExportLogsServiceRequest.FromString(encode.export_request(
        b"", [encode.log_record(ev, per_variable, span, 1)])).resource_logs[0].scope_logs[0].log_records
    b = attrs(lr.attributes)
    assert (b["process.environment_variable.HOME"], b["process.environment_variable.API_TOKEN"]) == \
        ("/root", "[REDACTED]")
    assert "otel_exec.env.rest" not in b and b["otel_exec.env_entries_without_value"] == ["NOEQUALS"]
    assert {k: v for k, v in b.items() if not k.startswith(attributes.ENV_PREFIX)} == \
        {k: v for k, v in a.items() if k != "otel_exec.env.rest"}
    assert a["otel_exec.interpreter.path"] == "/usr/lib/ld.so"
    assert a["otel_exec.env_truncated"] is True and "otel_exec.argv_truncated" not in a  # flags only when set
    assert a["otel_exec.path_truncated"] == ["pwd"]
    assert a["otel_exec.stdin.type"] == "chr" and a["otel_exec.stdin.path"] == "/dev/pts/3"


def test_span_round_trip_exit_codes_and_signals() -> None:
    ev = sample_exec()
    span = span_for(ev)
    info = span.process
    span.attributes = encode.exec_attributes(ev).span_attrs()
    info.exit_code = 3
    ok = ended(span, ev.timestamp + 5, "exit")
    info.exit_code, info.signal = None, 9
    killed = ended(span, ev.timestamp + 5, "exit")
    req = ExportTraceServiceRequest.FromString(encode.export_request(b"", [ok, killed]))
    s1, s2 = req.resource_spans[0].scope_spans[0].spans
    assert (s1.trace_id, s1.span_id, s1.parent_span_id) == (b"\x01" * 16, b"\x02" * 8, b"\x03" * 8)
    assert s1.trace_state == "k=v" and s1.name == "sudo" and s1.kind == 1
    assert (s1.start_time_unix_nano, s1.end_time_unix_nano) == (ev.timestamp, ev.timestamp + 5)
    a1, a2 = attrs(s1.attributes), attrs(s2.attributes)
    assert a1["process.exit.code"] == 3 and a1["error.type"] == "3" and s1.status.code == 2
    assert a1["process.pid"] == 4242 and a1["otel_exec.span.ended_by"] == "exit"
    assert a2["otel_exec.exit.signal"] == 9 and a2["error.type"] == "SIGKILL" and s2.status.code == 2
    info.signal, info.exit_code = None, 0
    clean = ExportTraceServiceRequest.FromString(encode.export_request(b"", [
        ended(span, ev.timestamp, "agent_stopped", incomplete=True)])).resource_spans[0].scope_spans[0].spans[0]
    assert clean.status.code == 0 and "error.type" not in attrs(clean.attributes)
    assert attrs(clean.attributes)["otel_exec.span.incomplete"] is True


def test_resource_has_service_and_host_and_honours_env(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci,host.name=override")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    ident = HostIdentity.current()
    res = resource_attributes(ident)
    assert res["service.name"] == "otel-exec"
    assert res["host.id"] == ident.machine_id and res["os.type"] == "linux"
    assert res["host.arch"] in ("amd64", "arm64") and res["service.instance.id"]
    assert res["deployment.environment.name"] == "ci" and res["host.name"] == "override"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "execs")
    res = resource_attributes(ident)
    assert res["service.name"] == "execs"
    req = ExportLogsServiceRequest.FromString(encode.export_request(encode.encoded_resource(res), []))
    assert attrs(req.resource_logs[0].resource.attributes)["service.name"] == "execs"
    assert not any(k.startswith("process.") for k in res)


def test_varints_and_int_attributes_of_every_size() -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    from otel_exec.export.otlp import protowire as w

    for v in (0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 4194304, 2**35, 2**63 - 1, -1, -(2**63)):
        kv = KeyValue.FromString(w.key_value(w.key_head("k"), w.any_value(v)))
        assert kv.value.int_value == v
    for pid in (1, 200, 70000, 4194303):
        ev = sample_exec(host_pid=pid, host_ppid=pid + 1, pid=pid, ppid=0)
        enc = encode.exec_attributes(ev)
        a = attrs(LogRecord.FromString(enc.ids.log + enc.common.log).attributes)
        assert (a["process.pid"], a["process.parent_pid"], a["process.vpid"], a["otel_exec.vppid"]) == \
            (pid, pid + 1, pid, 0)
        assert a["otel_exec.exec_id"] == "e" * 32


def test_what_a_record_would_say_twice_or_empty_is_left_out() -> None:
    """Each fact once (docs/attributes.md#exec-attributes): the pids seen
    from the exec's pid namespace only when they differ from the host's,
    otel_exec.interp only when it is not otel_exec.cmdpath, flags only when
    true, names only when known."""
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    def sent(**over: object) -> dict[str, object]:
        enc = encode.exec_attributes(sample_exec(**over))
        return attrs(LogRecord.FromString(enc.ids.log + enc.common.log).attributes)

    plain = sent(pid=4242, ppid=4000, interp="sudo", cmdpath="sudo", prev_comm="", stdin_path="",
                 invoked_from_kernel=False, argv_truncated=False, env_truncated=False)
    for gone in ("process.vpid", "otel_exec.vppid", "otel_exec.interp", "otel_exec.prev_comm",
                 "otel_exec.stdin.path", "otel_exec.invoked_from_kernel", "otel_exec.argv_truncated",
                 "otel_exec.env_truncated", "file.path"):
        assert gone not in plain, gone
    assert (plain["process.pid"], plain["process.parent_pid"], plain["otel_exec.cmdpath"]) == (4242, 4000, "sudo")
    every = sent(pid=1, ppid=0, interp="/usr/bin/script.sh", cmdpath="./script.sh", prev_comm="bash",
                 stdin_path="/dev/null", invoked_from_kernel=True, argv_truncated=True, env_truncated=True)
    assert (every["process.vpid"], every["otel_exec.vppid"]) == (1, 0)
    assert (every["otel_exec.interp"], every["otel_exec.cmdpath"]) == ("/usr/bin/script.sh", "./script.sh")
    assert (every["otel_exec.prev_comm"], every["otel_exec.stdin.path"]) == ("bash", "/dev/null")
    assert every["otel_exec.invoked_from_kernel"] is every["otel_exec.argv_truncated"] is \
        every["otel_exec.env_truncated"] is True


def test_fields_a_backend_could_not_verify_are_left_out() -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    ev = sample_exec(unavailable=("pathname", "process_start_time", "exec_id"))
    enc = encode.exec_attributes(ev)
    a = attrs(LogRecord.FromString(enc.ids.log + enc.common.log).attributes)
    for gone in ("process.executable.path", "process.executable.name", "file.path", "process.creation.time",
                 "otel_exec.exec_id"):
        assert gone not in a
    assert a["otel_exec.unavailable"] == ["pathname", "process_start_time", "exec_id"]
    assert a["process.pid"] == 4242 and a["process.command_args"] == ev.argv


# --- protowire against the protobuf library -----------------------------------

VARINT_EDGES = [0, 1, 127, 128, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 127 << 21, 127 << 35, (1 << 63) - 1,
                -1, -2, -(1 << 63)]


def test_varints_at_every_length_boundary_match_protobuf() -> None:
    from otel_exec.export.otlp import protowire as w
    for n in VARINT_EDGES:
        assert AnyValue.FromString(w.any_value(n)).int_value == n, n
        assert w.any_value(n) == AnyValue(int_value=n).SerializeToString(), n
    assert [len(w.varint(n)) for n in (127, 128, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, -1)] == [1, 2, 2, 3, 3, 4, 10]


def test_fixed_and_varint_fields_match_protobuf() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanPb

    from otel_exec.export.otlp import protowire as w
    # Span: start_time_unix_nano fixed64 (7), flags fixed32 (16), kind enum/varint (6).
    raw = w.varint_field(6, 3) + w.fixed64_field(7, (1 << 64) - 2) + w.fixed32_field(16, 0x80000301)
    span = SpanPb.FromString(raw)
    assert (span.kind, span.start_time_unix_nano, span.flags) == (3, (1 << 64) - 2, 0x80000301)
    assert raw == SpanPb(kind=3, start_time_unix_nano=(1 << 64) - 2, flags=0x80000301).SerializeToString()


def test_any_values_of_every_kind_match_protobuf() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import ArrayValue

    from otel_exec.export.otlp import protowire as w
    assert w.any_value(2.5) == AnyValue(double_value=2.5).SerializeToString()
    assert w.any_value(True) == AnyValue(bool_value=True).SerializeToString()
    assert AnyValue.FromString(w.any_value(False)).WhichOneof("value") == "bool_value"
    assert w.any_value(["a", "", "ü"]) == AnyValue(array_value=ArrayValue(values=[
        AnyValue(string_value="a"), AnyValue(string_value=""), AnyValue(string_value="ü")])).SerializeToString()
    # A lone surrogate (undecodable bytes of a path) becomes U+FFFD's "?"
    # replacement, never an encoding error that would lose the whole request.
    assert AnyValue.FromString(w.any_value("a\udcffb")).string_value == "a?b"
    kv = KeyValue.FromString(w.key_value(w.key_head("k.ü"), w.any_value(7)))
    assert (kv.key, kv.value.int_value) == ("k.ü", 7)
    many = ExportLogsServiceRequest.FromString(w.repeated(1, [b"", b"", b""]))
    assert len(many.resource_logs) == 3
    assert w.repeated(1, [b"a", b"bc"]) == b"\x0a\x01a\x0a\x02bc"  # nothing between occurrences


def test_precomputed_prefixes_frame_the_same_bytes_as_the_general_encoder() -> None:
    """The int and fixed-size string fast paths (prefix + value) give what
    framing the KeyValue from scratch gives, at every varint size."""
    from otel_exec.export.otlp import protowire as w
    for key in ("process.pid", "otel_exec.vppid", "k" * 200):
        prefixes = encode._int_prefixes(key)
        assert len(prefixes) == 11 and prefixes[0] == b""
        for v in (0, 1, 127, 128, 16_383, 16_384, 2**31 - 1, 2**32, 2**56, 2**63 - 1):
            kv = encode._kv(key, v)
            assert prefixes[len(w.varint(v))] + w.varint(v) == w.varint(len(kv)) + kv, (key, v)
        for size in (0, 1, 24, 32, 127, 128, 300):
            s = "x" * size
            kv = encode._kv(key, s)
            assert encode._str_prefix(key, size) + s.encode() == w.varint(len(kv)) + kv, (key, size)
    for key, s in (("otel_exec.exec_id", "e" * 32), ("otel_exec.exec_id", "short"),
                   ("process.creation.time", encode.iso8601(1_700_000_000_123_456_789)),
                   ("otel_exec.parent_exec_id", "f" * 31 + "\u00e9")):
        kv = encode._kv(key, s)
        assert encode._framed_fixed(key, s) == w.varint(len(kv)) + kv, (key, s)


def _fresh_memos() -> None:
    """The encoder memoizes keys, names, seconds and span endings per
    process; a test that checks how they are built starts without them (a
    mutation tool forks its workers from a process that already filled them)."""
    for memo in (encode._heads, encode._seconds, encode._endings, encode._names, encode._exe_names):
        memo.clear()


def _one_log(rec: bytes):
    return ExportLogsServiceRequest.FromString(encode.export_request(b"", [rec])).resource_logs[0] \
        .scope_logs[0].log_records[0]


def _one_span(rec: bytes):
    return ExportTraceServiceRequest.FromString(encode.export_request(b"", [rec])).resource_spans[0] \
        .scope_spans[0].spans[0]


def test_gap_record_round_trip() -> None:
    _fresh_memos()
    start, end = 1_700_000_000_250_000_000, 1_700_000_090_999_000_000
    lr = _one_log(encode.gap_record(start, end, 90.75, -3600.5))
    assert (lr.time_unix_nano, lr.observed_time_unix_nano) == (end, end)
    assert (lr.severity_number, lr.severity_text, lr.event_name) == (13, "WARN", "otel_exec.agent.gap")
    assert lr.body.string_value == ("otel-exec was not watching from 2023-11-14T22:13:20.250Z to "
                                    "2023-11-14T22:14:50.999Z")
    assert attrs(lr.attributes) == {"otel_exec.gap.start": "2023-11-14T22:13:20.250Z",
                                    "otel_exec.gap.end": "2023-11-14T22:14:50.999Z",
                                    "otel_exec.gap.seconds": 90.75,
                                    "otel_exec.gap.clock_step_seconds": -3600.5}
    assert lr.trace_id == b"" and lr.span_id == b""
    assert "otel_exec.gap.clock_step_seconds" not in attrs(_one_log(encode.gap_record(start, end, 1.0)).attributes)


def test_observed_record_and_seeded_attributes_round_trip() -> None:
    _fresh_memos()
    ev = sample_exec(host_pid=321, host_ppid=1, start_ticks=50, exec_id="a" * 32, parent_exec_id="b" * 32,
                     comm="bash", pathname="/usr/bin/bash", argv=["bash", "-l", "x y"], observed=True)
    info = ProcessInfo(321, 1, 50, "a" * 32, "b" * 32, "bash", "/usr/bin/bash", ev.argv, True, None)
    span = ProcessSpan(info, b"\x01" * 16, b"\x02" * 8, b"", "", "", "", ev.timestamp)
    seeded = encode.seeded_attributes(ev)
    lr = _one_log(encode.observed_record(ev, span, encode.Attrs.of(seeded), 1_700_000_005_000_000_000))
    assert (lr.time_unix_nano, lr.observed_time_unix_nano) == (1_700_000_005_000_000_000,) * 2
    assert (lr.severity_number, lr.severity_text, lr.event_name) == (9, "INFO", "otel_exec.process.observed")
    assert lr.body.string_value == "bash -l 'x y'"
    assert (lr.trace_id, lr.span_id, lr.flags) == (b"\x01" * 16, b"\x02" * 8, 1)
    assert attrs(lr.attributes) == {
        "process.pid": 321, "process.parent_pid": 1, "process.executable.path": "/usr/bin/bash",
        "process.executable.name": "bash", "otel_exec.comm": "bash", "otel_exec.exec_id": "a" * 32,
        "otel_exec.parent_exec_id": "b" * 32, "otel_exec.observed_from": "procfs",
        "process.command": "bash", "process.command_args": ["bash", "-l", "x y"], "process.args_count": 3}
    # A kernel thread: no argv, named by comm; a process without its own span has no ids.
    kthread = sample_exec(host_pid=2, host_ppid=0, start_ticks=1, exec_id="c" * 32, parent_exec_id="", comm="kthreadd",
                          pathname="", argv=[], observed=True)
    seeded = encode.seeded_attributes(kthread)
    lr = _one_log(encode.observed_record(kthread, None, encode.Attrs.of(seeded), 5))
    assert lr.body.string_value == "kthreadd" and lr.trace_id == b"" and lr.span_id == b""
    assert "process.command" not in attrs(lr.attributes) and "process.args_count" not in attrs(lr.attributes)
    assert encode.Attrs.of([]).log == b"" and encode.Attrs.of([]).span == b""
    both = encode.Attrs.concat((encode.Attrs.of(seeded[:2]), encode.Attrs.of(seeded[2:])))
    assert (both.log, both.span) == (encode.Attrs.of(seeded).log, encode.Attrs.of(seeded).span)


def test_span_endings_and_names_built_fresh() -> None:
    _fresh_memos()
    ev = sample_exec()
    span = span_for(ev)
    info = span.process
    span.attributes = encode.exec_attributes(ev).span_attrs()
    cases = [  # (exit_code, signal, reason, incomplete) -> (attributes of the ending, status code, message)
        ((0, None, "exit", False), {"otel_exec.span.ended_by": "exit", "process.exit.code": 0}, 0, ""),
        ((3, None, "exec", False), {"otel_exec.span.ended_by": "exec", "process.exit.code": 3,
                                    "error.type": "3"}, 2, "exited with 3"),
        ((None, 11, "exit", False), {"otel_exec.span.ended_by": "exit", "otel_exec.exit.signal": 11,
                                     "process.exit.code": 128 + 11,  # a signal death, as shells report it
                                     "error.type": "SIGSEGV"}, 2, "exited with SIGSEGV"),
        ((None, 99, "exit", False), {"otel_exec.span.ended_by": "exit", "otel_exec.exit.signal": 99,
                                     "process.exit.code": 128 + 99,  # a signal death, as shells report it
                                     "error.type": "signal 99"}, 2, "exited with signal 99"),
        ((None, None, "agent_stopped", True), {"otel_exec.span.ended_by": "agent_stopped",
                                               "otel_exec.span.incomplete": True}, 0, ""),
    ]
    for (code, signo, reason, incomplete), ending, status, message in cases:
        info.exit_code, info.signal = code, signo
        for _ in range(2):  # built, then from the memo
            s = _one_span(ended(span, ev.timestamp - 1, reason, incomplete))
            a = attrs(s.attributes)
            assert {k: v for k, v in a.items() if k in ending or k.startswith(("otel_exec.span.", "error.",
                    "otel_exec.exit.", "process.exit."))} == ending
            assert (s.status.code, s.status.message) == (status, message)
            assert s.name == "sudo" and s.end_time_unix_nano == s.start_time_unix_nano == ev.timestamp
    info.exe, info.comm = "", "kworker/0:1"
    span.trace_state, span.parent_span_id, span.untrusted_traceparent = "", b"", "00-bad"
    s = _one_span(ended(span, ev.timestamp + 7, "exit"))
    assert s.name == "kworker/0:1" and s.trace_state == "" and s.parent_span_id == b""
    assert s.end_time_unix_nano == ev.timestamp + 7
    assert attrs(s.attributes)["otel_exec.traceparent.untrusted"] == "00-bad"


# --- the attribute table (otel_exec/export/otlp/attributes.py) --------------------

PACKAGE = Path(__file__).resolve().parent.parent / "otel_exec"
TABLE_FILE = PACKAGE / "export" / "otlp" / "attributes.py"


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module, f-string pieces included."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_attribute_key_is_spelled_outside_the_table() -> None:
    keys = set(attributes.TABLE)
    assert len(keys) > 60 and "service.name" in keys and "process.pid" in keys  # the table, not an empty dict
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == TABLE_FILE:
            continue
        for line, value in _string_literals(path):
            if value in keys or value.startswith(attributes.ENV_PREFIX):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}")
    assert not found, "attribute keys spelled outside otel_exec/export/otlp/attributes.py:\n" + "\n".join(found)


def test_the_table_names_fields_of_exec_events() -> None:
    for key, fields in attributes.TABLE.items():
        assert set(fields) <= set(ExecEvent.__slots__), key


def _keys(kvs) -> set[str]:  # type: ignore[no-untyped-def]
    return {kv.key for kv in kvs}


def test_every_key_sent_is_in_the_table() -> None:
    ev = sample_exec(sample_rate=10, unavailable=("prev_comm",))
    span = span_for(ev)
    span.untrusted_traceparent = "00-bad"
    span.attributes = encode.exec_attributes(ev).span_attrs()
    sent: set[str] = set()
    spans = []
    for span.process.exit_code, span.process.signal in ((1, None), (None, 9)):
        spans.append(ended(span, ev.timestamp, "exit", True))
    for encoded in ExportTraceServiceRequest.FromString(encode.export_request(b"", spans)).resource_spans[0] \
            .scope_spans[0].spans:
        sent |= _keys(encoded.attributes)
    observed = sample_exec(host_pid=321, host_ppid=1, exec_id="a" * 32, parent_exec_id="b" * 32, comm="bash",
                           pathname="/usr/bin/bash", argv=["bash"], observed=True)
    records = [encode.log_record(ev, encode.exec_attributes(ev), span, 1),
               encode.log_record(ev, encode.exec_attributes(ev, limits=RecordLimits(env_attributes=48)), span, 1),
               encode.observed_record(observed, span_for(observed),
                                      encode.Attrs.of(encode.seeded_attributes(observed)), 1),
               encode.gap_record(1, 2, 1.0, 0.5), encode.exit_record(span, 1)]
    request = ExportLogsServiceRequest.FromString(
        encode.export_request(encode.encoded_resource(resource_attributes(HostIdentity.current())), records))
    sent |= _keys(request.resource_logs[0].resource.attributes)
    for record in request.resource_logs[0].scope_logs[0].log_records:
        sent |= _keys(record.attributes)
    env = {key for key in sent if key.startswith(attributes.ENV_PREFIX)}
    assert env and attributes.ENV_REST in sent and not sent - env - set(attributes.TABLE)


def test_an_unavailable_field_takes_along_the_keys_the_table_gives_it() -> None:
    """On both paths: the per-exec one (BCC, no shared part: any field) and
    the one encoded once per shared part (CO-RE: the fields --no-field
    switches off)."""
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    from otel_exec.config import FIELD_GROUPS

    # Every identity value set, and a status that is sent (not complete).
    identity = ExecutableIdentity(TOO_LARGE, size=1, sha256="ab" * 32, htlhash="cd" * 16, gnu_build_id="ef" * 20,
                                  go_build_id="go/id")
    script = ExecutableIdentity(BY_PATH, size=2, sha256="12" * 32, htlhash="34" * 16)

    def sent(unavailable: tuple[str, ...], shared: SharedExec | None,
             limits: RecordLimits = RecordLimits()) -> set[str]:
        # Flags set and an interp of its own: every key a field carries is sent.
        enc = encode.exec_attributes(sample_exec(unavailable=unavailable, shared=shared,
                                                 executable_identity=identity, script_identity=script,
                                                 argv_truncated=True, invoked_from_kernel=True, interp="/bin/sh"),
                                     encode.SPAN_SLIM, limits)
        return _keys(LogRecord.FromString(enc.ids.log + enc.common.log).attributes)

    # --record-attributes full; with a field unavailable a record is full whatever the setting, since what a
    # compact one leaves out may follow from the unavailable field.
    everything = sent((), None, RecordLimits(repeat_derived=True))
    for field in sorted({f for fields in attributes.TABLE.values() for f in fields}):
        gone = {key for key, fields in attributes.TABLE.items() if field in fields}
        assert gone <= everything, field
        assert sent((field,), None) == everything - gone | {attributes.UNAVAILABLE}, field
    for field in sorted({f for fields in FIELD_GROUPS.values() for f in fields}):
        gone = {key for key, fields in attributes.TABLE.items() if field in fields}
        assert sent((field,), SharedExec(())) == everything - gone | {attributes.UNAVAILABLE}, field


def test_log_records_carry_the_trace_flags_of_their_span() -> None:
    """A span under a TRACEPARENT with the sampled bit clear is not
    exported, but its exec's log record is, with the flags as received."""
    ev = sample_exec()
    for flags in (0, 1, 3, 255):
        span = span_for(ev)
        span.trace_flags = flags
        lr = _one_log(encode.log_record(ev, encode.exec_attributes(ev), span, 5))
        assert (lr.flags, lr.trace_id, lr.span_id) == (flags, b"\x01" * 16, b"\x02" * 8)
        observed = _one_log(encode.observed_record(ev, span, encode.Attrs.of([]), 5))
        assert (observed.flags, observed.trace_id) == (flags, b"\x01" * 16)


def test_exit_record_round_trip() -> None:
    """An ended image's exit record: when and how it ended, which process,
    exec and executable, how long it ran, and its span's ids."""
    _fresh_memos()
    ev = sample_exec()
    span = span_for(ev)
    info = span.process
    cases = [  # (exit code, signal, ended_by, incomplete) -> (body, end attributes)
        ((0, None, "exit", False), "exited with code 0", {"otel_exec.span.ended_by": "exit", "process.exit.code": 0}),
        ((1, None, "exit", False), "exited with code 1",
         {"otel_exec.span.ended_by": "exit", "process.exit.code": 1, "error.type": "1"}),
        ((None, 9, "exit", False), "killed by SIGKILL (exit code 137)",
         {"otel_exec.span.ended_by": "exit", "process.exit.code": 137, "otel_exec.exit.signal": 9,
          "error.type": "SIGKILL"}),
        ((None, None, "exec", False), "ended by exec", {"otel_exec.span.ended_by": "exec"}),
        ((None, None, "agent_stopped", True), "ended by agent_stopped",
         {"otel_exec.span.ended_by": "agent_stopped", "otel_exec.span.incomplete": True}),
    ]
    for (code, signo, reason, incomplete), body, ending in cases:
        info.exit_code, info.signal = code, signo
        span.end_ns, span.ended_by, span.incomplete = ev.timestamp + 1_500_000_000, reason, incomplete
        # Compact (the default): the exec record's pid and executable name
        # are left to it; --record-attributes full (repeat_derived) sends them.
        for repeat_derived, who in ((False, {}), (True, {"process.pid": 4242, "process.executable.name": "sudo"})):
            req = ExportLogsServiceRequest.FromString(encode.export_request(
                b"", [encode.exit_record(span, 77, repeat_derived)]))
            (lr,) = req.resource_logs[0].scope_logs[0].log_records
            assert lr.event_name == "otel_exec.process.exit" and lr.body.string_value == body
            assert lr.time_unix_nano == span.end_ns and lr.observed_time_unix_nano == 77
            assert lr.trace_id == span.trace_id and lr.span_id == span.span_id and lr.flags == 1
            assert lr.severity_number == 9 and lr.severity_text == "INFO"
            keys = [kv.key for kv in lr.attributes]
            assert len(keys) == len(set(keys))
            assert attrs(lr.attributes) == {**who, "otel_exec.exec_id": ev.exec_id, "otel_exec.process.duration": 1.5,
                                            **ending}
        assert encode.exit_record(span, 77) == encode.exit_record(span, 77, False)
    # An image without an executable, an exec id of another size, an end
    # time before the start (clamped as the span's is).
    info.exe, info.exec_id, info.pid = "", "short", 2**40
    span.end_ns = span.start_ns - 5
    for repeat_derived in (False, True):
        (lr,) = ExportLogsServiceRequest.FromString(encode.export_request(
            b"", [encode.exit_record(span, 1, repeat_derived)])).resource_logs[0].scope_logs[0].log_records
        a = attrs(lr.attributes)
        assert "process.executable.name" not in a and a["otel_exec.exec_id"] == "short"
        assert a.get("process.pid") == (2**40 if repeat_derived else None) and a["otel_exec.process.duration"] == 0.0
        assert lr.time_unix_nano == span.start_ns


def test_requests_carry_the_schema_url_on_resource_and_scope() -> None:
    ev = sample_exec()
    span = span_for(ev)
    rec = encode.log_record(ev, encode.exec_attributes(ev), span, 1)
    records = [rec, encode.exit_record(span, 2)]
    request = encode.export_request(encode.encoded_resource({"service.name": "t"}), records)
    logs = ExportLogsServiceRequest.FromString(request)
    assert logs.resource_logs[0].schema_url == attributes.SCHEMA_URL == "https://opentelemetry.io/schemas/1.44.0"
    assert logs.resource_logs[0].scope_logs[0].schema_url == attributes.SCHEMA_URL
    assert len(logs.resource_logs[0].scope_logs[0].log_records) == 2
    assert encode.request_records(request) == records  # a split sends the same records
    span.end_ns, span.ended_by = ev.timestamp, "exit"
    traces = ExportTraceServiceRequest.FromString(encode.export_request(b"", [encode.span(span)]))
    assert traces.resource_spans[0].schema_url == traces.resource_spans[0].scope_spans[0].schema_url \
        == attributes.SCHEMA_URL


def test_resource_names_otel_exec_honestly(monkeypatch) -> None:
    """telemetry.sdk.name `opentelemetry` is reserved for the OpenTelemetry
    SDKs, which encode none of our logs and traces; they make the agent's
    metrics, whose resource says so. service.instance.id: UUIDv5 of the
    machine id under the namespace the conventions name."""
    import uuid

    from opentelemetry.sdk.version import __version__ as sdk_version

    from otel_exec import __version__
    from otel_exec.export.otlp.resource import metrics_resource

    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    ident = HostIdentity.current()
    res = resource_attributes(ident)
    assert res["service.instance.id"] == str(uuid.uuid5(uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320"),
                                                         ident.machine_id))
    assert (res["telemetry.sdk.name"], res["telemetry.sdk.language"], res["telemetry.sdk.version"]) == \
        ("otel-exec", "python", __version__)
    assert (res["telemetry.distro.name"], res["telemetry.distro.version"]) == ("otel-exec", __version__)
    metrics = metrics_resource(res)
    assert (metrics["telemetry.sdk.name"], metrics["telemetry.sdk.version"]) == ("opentelemetry", sdk_version)
    assert metrics["telemetry.distro.name"] == "otel-exec"
    assert {k: v for k, v in metrics.items() if not k.startswith("telemetry.sdk.")} == \
        {k: v for k, v in res.items() if not k.startswith("telemetry.sdk.")}
