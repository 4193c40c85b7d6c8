"""otel_exec.export.otlp.encode's framing, memos and rarely taken branches,
byte for byte against the protobuf library: splitting a request back into
records, span names (kernel threads, undecodable paths), the encoded
endings, Attrs, and the bounded memos (each consulted, each emptied when
full)."""
from __future__ import annotations

import stat

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_exec.export.otlp import attributes as keys
from otel_exec.export.otlp import encode
from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.executable import COMPLETE, ExecutableIdentity
from otel_exec.model.process import ProcessInfo
from otel_exec.model.events import SharedExec
from tests.helpers.events import attrs, sample_exec


@pytest.fixture(autouse=True)
def fresh_memos() -> None:
    """Each case starts without the encoder's memos (a mutation tool forks
    its workers from a process that already filled them)."""
    for memo in (encode._heads, encode._seconds, encode._endings, encode._names, encode._identities,
                 encode._exec_identities, encode._shared_encodings):
        memo.clear()
    encode._shared_encodings.bytes = 0


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def process_span(exe: str, comm: str) -> ProcessSpan:
    span = ProcessSpan(ProcessInfo(7, 1, 0, "a" * 32, "b" * 32, comm, exe, [comm], False, 1),
                       trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"", trace_state="",
                       traceparent="", untrusted_traceparent="", start_ns=10)
    span.end_ns, span.ended_by = 20, "exit"
    return span


def span_name(exe: str, comm: str) -> str:
    return Span.FromString(encode.request_records(encode.export_request(b"", [encode.span(
        process_span(exe, comm))]))[0][2:]).name


def test_request_records_gives_back_the_records_framed_as_before() -> None:
    records = [encode.gap_record(1_000_000_000, 2_000_000_000, 1.0), encode.gap_record(3, 4, 0.5)]
    resource = encode.encoded_resource({"service.name": "otel-exec"})
    assert encode.request_records(encode.export_request(resource, records)) == records
    assert encode.request_records(encode.export_request(resource, [])) == []
    assert encode.request_records(b"") == []
    # a resource block without a scope block, then a field of another number
    assert encode.request_records(w.len_field(1, w.len_field(1, resource)) + w.len_field(2, b"")) == []
    # only field 2 of the scope block is a record; the scope (1) is not
    scope_block = w.len_field(1, b"scope") + w.len_field(2, b"rec") + w.varint_field(3, 5)
    assert encode.request_records(w.len_field(1, w.len_field(2, scope_block))) == [w.len_field(2, b"rec")]
    assert encode.request_records(w.len_field(2, w.len_field(2, scope_block))) == []


def test_span_names_by_executable_or_by_comm() -> None:
    """Kernel threads (no executable) are named by comm, each by its own;
    two executables with one comm keep their own names."""
    assert span_name("", "kworker/0:1") == "kworker/0:1"
    assert span_name("", "kthreadd") == "kthreadd"
    assert span_name("/usr/bin/a", "same") == "a"
    assert span_name("/usr/sbin/b", "same") == "b"
    assert span_name("/usr/bin/a", "other") == "a"


def test_span_name_of_an_undecodable_path() -> None:
    """A path that is not UTF-8 (os.fsdecode's surrogates) names the span
    with replacement characters instead of failing."""
    assert span_name("/bin/caf\udce9", "x") == "caf?"


def test_span_names_come_from_the_memo_which_is_bounded() -> None:
    encode._names["/bin/memo"] = w.len_field(5, b"from-the-memo")
    assert span_name("/bin/memo", "x") == "from-the-memo"
    encode._names.clear()
    span_name("/bin/one", "x")
    assert encode._names == {"/bin/one": w.len_field(5, b"one")}
    encode._names.update({f"/k{i}": b"" for i in range(4094)})
    span_name("/bin/two", "x")
    assert len(encode._names) == 4096
    span_name("/bin/three", "x")
    assert encode._names == {"/bin/three": w.len_field(5, b"three")}


ENDINGS = [  # (reason, incomplete, exit_code, signal) -> attributes and status, as protobuf builds them
    (("exit", False, 0, None), [kv(keys.ENDED_BY, string_value="exit"), kv(keys.EXIT_CODE, int_value=0)], None),
    (("exec", False, 3, None), [kv(keys.ENDED_BY, string_value="exec"), kv(keys.EXIT_CODE, int_value=3),
                                kv(keys.ERROR_TYPE, string_value="3")], "exited with 3"),
    (("exit", True, 1, 9), [kv(keys.ENDED_BY, string_value="exit"), kv(keys.INCOMPLETE, bool_value=True),
                            kv(keys.EXIT_CODE, int_value=128 + 9), kv(keys.EXIT_SIGNAL, int_value=9),
                            kv(keys.ERROR_TYPE, string_value="SIGKILL")],
     "exited with SIGKILL"),
    (("evicted", True, None, None), [kv(keys.ENDED_BY, string_value="evicted"),
                                     kv(keys.INCOMPLETE, bool_value=True)], None),
    (("exit", False, None, 200), [kv(keys.ENDED_BY, string_value="exit"), kv(keys.EXIT_CODE, int_value=128 + 200),
                                  kv(keys.EXIT_SIGNAL, int_value=200),
                                  kv(keys.ERROR_TYPE, string_value="signal 200")], "exited with signal 200"),
]


@pytest.mark.parametrize("args,kvs,message", ENDINGS, ids=[str(c[0]) for c in ENDINGS])
def test_endings_byte_for_byte(args: tuple, kvs: list[KeyValue], message: str | None) -> None:
    want = Span(attributes=kvs, status=Status(code=2, message=message) if message else None)
    first = encode._ending(*args)[0]  # the span's part
    assert first == want.SerializeToString()
    assert encode._endings[args][0] == first
    assert encode._ending(*args)[0] == first


def test_endings_come_from_the_memo_which_is_bounded() -> None:
    encode._endings[("exit", False, 0, None)] = (b"memo", b"")
    assert encode._ending("exit", False, 0, None)[0] == b"memo"
    encode._endings.clear()
    encode._endings.update({(str(i), False, None, None): (b"", b"") for i in range(4095)})
    encode._ending("exit", False, 1, None)
    assert len(encode._endings) == 4096 and ("exit", False, 1, None) in encode._endings
    encode._ending("exit", False, 2, None)
    assert len(encode._endings) == 4096 and ("exit", False, 2, None) not in encode._endings


def test_attrs_framed_under_the_log_and_span_field_numbers() -> None:
    one, two = encode._kv("a", "x"), encode._kv("b", 7)
    a = encode.Attrs.of([one, two])
    assert a.log == w.len_field(6, one) + w.len_field(6, two)
    assert a.span == w.len_field(9, one) + w.len_field(9, two)
    empty = encode.Attrs.of([])
    assert (empty.log, empty.span) == (b"", b"")
    both = encode.Attrs.concat((a, encode.Attrs.of([one])))
    assert (both.log, both.span) == (a.log + w.len_field(6, one), a.span + w.len_field(9, one))
    assert Span.FromString(a.span).attributes == [kv("a", string_value="x"), kv("b", int_value=7)]


def test_key_heads_are_remembered_and_the_memo_bounded() -> None:
    encode._h("k")
    assert encode._heads == {"k": w.key_head("k")}
    encode._heads["memo"] = w.key_head("z")
    assert encode._kv("memo", "v") == KeyValue(key="z", value=AnyValue(string_value="v")).SerializeToString()
    encode._heads.update({f"k{i}": b"" for i in range(8190)})
    assert len(encode._heads) == 8192
    encode._h("new")
    assert encode._heads == {"new": w.key_head("new")}


def test_seconds_memo_is_consulted_and_bounded() -> None:
    assert encode.iso8601(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"
    assert encode._seconds == {1_700_000_000: "2023-11-14T22:13:20"}
    encode._seconds[5] = "memo"
    assert encode.iso8601(5_000_000_001) == "memo.000Z"
    encode._seconds.update({-i: "" for i in range(1, 4095)})
    assert len(encode._seconds) == 4096
    encode.iso8601(0)
    assert encode._seconds == {0: "1970-01-01T00:00:00"}


def identity_event_attrs(identity: ExecutableIdentity) -> dict[str, object]:
    from testkit.exe_reference import exec_event
    ev = exec_event("/bin/true")
    ev.executable_identity = identity
    return attrs(Span.FromString(encode.identity_attrs(ev).span).attributes)


def test_identity_memos_are_bounded() -> None:
    first = ExecutableIdentity(COMPLETE, size=1, htlhash="11" * 16)
    identity_event_attrs(first)
    assert len(encode._identities) == 1 and len(encode._exec_identities) == 1
    encode._identities.update({(ExecutableIdentity(COMPLETE, size=i), False): [] for i in range(2, 4097)})
    encode._exec_identities.update({-i: (first, encode.Attrs(b"", b"")) for i in range(1, 4096)})
    assert len(encode._identities) == len(encode._exec_identities) == 4096
    second = ExecutableIdentity(COMPLETE, size=2, htlhash="22" * 16)
    assert identity_event_attrs(second) == {keys.BUILD_ID_HTLHASH: "22" * 16, keys.EXECUTABLE_SIZE: 2}
    assert encode._identities == {(second, False): [encode._kv(keys.BUILD_ID_HTLHASH, "22" * 16),
                                                    encode._kv(keys.EXECUTABLE_SIZE, 2)]}
    assert list(encode._exec_identities) == [id(second)]


def test_identity_memos_are_consulted() -> None:
    from testkit.exe_reference import exec_event
    ev = exec_event("/bin/true")
    ev.executable_identity = identity = ExecutableIdentity(COMPLETE, size=3)
    encode._exec_identities[id(identity)] = (identity, encode.Attrs(b"L", b"S"))
    got = encode.identity_attrs(ev)
    assert (got.log, got.span) == (b"L", b"S")
    # an entry left by another object that had the same id is not used
    encode._exec_identities[id(identity)] = (ExecutableIdentity(COMPLETE, size=4), encode.Attrs(b"L", b"S"))
    got = encode.identity_attrs(ev)
    assert attrs(Span.FromString(got.span).attributes) == {keys.EXECUTABLE_SIZE: 3}
    encode._exec_identities.clear()
    encode._identities[(identity, False)] = [encode._kv("memo", 1)]
    assert attrs(Span.FromString(encode.identity_attrs(ev).span).attributes) == {"memo": 1}
    encode._identities.clear()
    ev.script_identity = script = ExecutableIdentity(COMPLETE, size=5)
    encode.identity_attrs(ev)
    assert set(encode._identities) == {(identity, False), (script, True)}


def test_no_identity_encodes_nothing() -> None:
    ev = sample_exec()
    none = encode.identity_attrs(ev)
    assert (none.log, none.span) == (b"", b"")
    ev.executable_identity = ExecutableIdentity(COMPLETE, size=3)
    ev.unavailable = ("executable_identity",)
    none = encode.identity_attrs(ev)
    assert (none.log, none.span) == (b"", b"")


def record_attrs(ev, span_set: int = encode.SPAN_SLIM,
                 limits: RecordLimits = RecordLimits()) -> tuple[dict[str, object], dict[str, object]]:
    """(log attributes, span attributes) of an exec."""
    enc = encode.exec_attributes(ev, span_set, limits)
    return (attrs(Span.FromString(_as_span(enc.ids.log + enc.common.log)).attributes),
            attrs(Span.FromString(b"".join(enc.span_attrs())).attributes))


def _as_span(log_attrs: bytes) -> bytes:
    """LogRecord.attributes (field 6) renumbered as Span.attributes (9),
    to read both with one message type."""
    out = b""
    for number, _, value in w.fields(log_attrs):
        assert number == 6
        out += w.len_field(9, value)
    return out


@pytest.mark.parametrize("shared", [False, True], ids=["per-exec", "shared"])
@pytest.mark.parametrize("exec_id,parent,start", [
    ("", "", 1_700_000_000_000_000_000),
    ("e" * 16, "f" * 32, 1_700_000_000_000_000_000),
    ("e" * 32, "f" * 16, 1_700_000_000_000_000_000),
    ("e" * 16, "f" * 16, 1_700_000_000_000_000_000),
    ("e" * 32, "f" * 32, 253_402_300_800 * 10**9),  # year 10000: a longer creation time
    ("e" * 32, "f" * 32, 1_700_000_000_000_000_000),
])
def test_ids_of_every_length(shared: bool, exec_id: str, parent: str, start: int) -> None:
    ev = sample_exec(exec_id=exec_id, parent_exec_id=parent, process_start_time=start)
    if shared:
        ev.shared = SharedExec(())
    want = {keys.EXEC_ID: exec_id, keys.PARENT_EXEC_ID: parent, keys.CREATION_TIME: encode.iso8601(start),
            keys.PID: 4242, keys.PARENT_PID: 4000}
    for span_set in (encode.SPAN_SLIM, encode.SPAN_FULL):
        encode._shared_encodings.clear()
        log, span_attrs = record_attrs(ev, span_set)
        assert {k: log[k] for k in want} == want
        on_span = want if span_set == encode.SPAN_FULL else {keys.EXEC_ID: exec_id, keys.PID: 4242}
        assert {k: v for k, v in span_attrs.items() if k in want} == on_span


def test_the_shared_encoding_is_remembered_per_shared_part() -> None:
    shared = SharedExec(())
    first = sample_exec(argv=["first"])
    first.shared = shared
    encode.exec_attributes(first)
    assert shared not in encode._shared_encodings  # a one-off exec's shared part: not kept
    shared.repeats = True  # as the decoder marks one its own memo keeps
    enc = encode.exec_attributes(first)
    common, body = encode._shared_encodings[shared]
    assert (enc.common.log, enc.common.span, enc.body) == (common.log, common.span, body)
    assert encode._shared_encodings.bytes == len(common.log) + len(common.span) + len(body)
    second = sample_exec(argv=["second"], host_pid=5)
    second.shared = shared
    again = encode.exec_attributes(second)
    assert (again.common.log, again.body) == (common.log, body)  # the shared part is the shared part's
    assert attrs(Span.FromString(_as_span(again.ids.log)).attributes)[keys.PID] == 5


@pytest.mark.parametrize("shared", [False, True], ids=["per-exec", "shared"])
@pytest.mark.parametrize("env_attributes", [0, 48], ids=["packed", "per-variable"])
def test_the_environment_on_the_span_only_with_span_env(shared: bool, env_attributes: int) -> None:
    for span_env in (False, True):
        encode._shared_encodings.clear()
        ev = sample_exec(env=["A=b=c", "D=e"])
        if shared:
            ev.shared = SharedExec(())
        limits = RecordLimits(env_attributes=env_attributes)
        log, span_attrs = record_attrs(ev, encode.span_set("full", span_env), limits)
        env = {keys.ENV_PREFIX + "A": "b=c", keys.ENV_PREFIX + "D": "e"} if env_attributes else \
            {keys.ENV_REST: ["A=b=c", "D=e"]}
        assert {k: log[k] for k in env} == env
        assert {k: v for k, v in span_attrs.items() if k.startswith(keys.ENV_PREFIX) or k == keys.ENV_REST} == \
            (env if span_env else {})
        assert keys.CMDPATH in span_attrs
    encode._shared_encodings.clear()
    ev = sample_exec(env=["A=b"])
    if shared:
        ev.shared = SharedExec(())
    by_default = encode.exec_attributes(ev)
    assert not any(k.startswith(keys.ENV_PREFIX) or k == keys.ENV_REST
                   for k in attrs(Span.FromString(b"".join(by_default.span_attrs())).attributes))


# --record-attributes full: the attributes a compact record leaves out are sent too.
FULL_RECORD = RecordLimits(repeat_derived=True)


def test_file_types_interactive_and_empty_argv() -> None:
    log, _ = record_attrs(sample_exec(), limits=FULL_RECORD)
    assert (log[keys.FILE_TYPE], log[keys.STDIN_TYPE], log[keys.INTERACTIVE]) == ("reg", "chr", True)
    assert log[keys.COMMAND] == "sudo"
    cases = [  # (inode_mode, stdin_type, stdin_path) -> (file type, stdin type, interactive)
        ((0o755, 0, ""), ("unknown", "none", False)),
        ((stat.S_IFREG | 0o755, 0o170000, "/dev/pts/1"), ("reg", "unknown", False)),
        ((stat.S_IFREG, stat.S_IFIFO, "/dev/pts/1"), ("reg", "fifo", False)),
        ((stat.S_IFREG, stat.S_IFCHR, "/dev/tty1"), ("reg", "chr", True)),
        ((stat.S_IFREG, stat.S_IFCHR, "/dev/null"), ("reg", "chr", False)),
    ]
    for (mode, stdin_type, stdin_path), want in cases:
        encode._shared_encodings.clear()
        log, _ = record_attrs(sample_exec(inode_mode=mode, stdin_type=stdin_type, stdin_path=stdin_path),
                              limits=FULL_RECORD)
        assert (log[keys.FILE_TYPE], log[keys.STDIN_TYPE], log[keys.INTERACTIVE]) == want, (mode, stdin_type)
    log, _ = record_attrs(sample_exec(argv=[], argc=0), limits=FULL_RECORD)
    assert (log[keys.COMMAND], log[keys.COMMAND_ARGS]) == ("", [])


def test_a_compact_record_leaves_out_only_what_its_other_attributes_say() -> None:
    """By default (docs/attributes.md#exec-attributes): process.command is
    process.command_args[0]; otel_exec.comm the first 15 characters of
    otel_exec.cmdpath's base name; process.interactive false and
    otel_exec.file.type reg; otel_exec.interpreter.dev otel_exec.file.dev;
    process.args_count the length of process.command_args, in a record
    that is not cut; otel_exec.env_count the number of the environment's
    entries, in a record sent as it is. Each is sent when it says something
    else, and the rest of the record is the full record's."""
    derived = {keys.COMMAND, keys.COMM, keys.INTERACTIVE, keys.FILE_TYPE, keys.INTERPRETER_DEV, keys.ARGS_COUNT,
               keys.ENV_COUNT}
    # The environment: HOME, API_TOKEN, the entry without "=": three; HOME again is not sent.
    ev = dict(cmdpath="/usr/local/bin/a-very-long-command-name", comm="a-very-long-com", argv=["x", "y"], argc=2,
              stdin_type=stat.S_IFIFO, stdin_path="pipe:[1]", interpreter_dev=65024, dev=65024,
              env=["HOME=/root", "API_TOKEN=[REDACTED]", "NOEQUALS"], envc=3, env_truncated=False)
    encode._shared_encodings.clear()
    compact, _ = record_attrs(sample_exec(**ev))
    encode._shared_encodings.clear()
    full, _ = record_attrs(sample_exec(**ev), limits=FULL_RECORD)
    assert not derived & set(compact) and {k: v for k, v in full.items() if k not in derived} == compact
    assert (full[keys.COMMAND], full[keys.COMM], full[keys.INTERACTIVE], full[keys.FILE_TYPE],
            full[keys.INTERPRETER_DEV], full[keys.ARGS_COUNT], full[keys.ENV_COUNT]) == \
        ("x", "a-very-long-com", False, "reg", 65024, 2, 3)
    for over, key, value in [
        (dict(comm="other"), keys.COMM, "other"),
        (dict(comm="a-very-long-coé"), keys.COMM, "a-very-long-coé"),
        (dict(stdin_type=stat.S_IFCHR, stdin_path="/dev/pts/0"), keys.INTERACTIVE, True),
        (dict(inode_mode=0o755), keys.FILE_TYPE, "unknown"),
        (dict(interpreter_dev=2049), keys.INTERPRETER_DEV, 2049),
        (dict(argv=[], argc=0), keys.COMMAND, ""),
        (dict(argc=3), keys.ARGS_COUNT, 3),  # fewer arguments than the kernel counted
        (dict(argv_truncated=True), keys.ARGS_COUNT, 2),
        (dict(envc=4), keys.ENV_COUNT, 4),  # an entry redacted away, or a key set twice
        (dict(env=["HOME=/root", "HOME=/second", "NOEQUALS"]), keys.ENV_COUNT, 3),
        (dict(env_truncated=True), keys.ENV_COUNT, 3),
        (dict(argv=["x"] * 3000, argc=3000), keys.ENV_COUNT, 3),  # shaped (its body is cut): sent
    ]:
        encode._shared_encodings.clear()
        log, _ = record_attrs(sample_exec(**{**ev, **over}))
        assert log[key] == value, over
    encode._shared_encodings.clear()
    packed, _ = record_attrs(sample_exec(**ev), limits=RecordLimits(env_attributes=0))  # the default
    assert keys.ENV_REST in packed and keys.RECORD_CUT not in packed and not derived & set(packed)
    encode._shared_encodings.clear()
    per_variable, _ = record_attrs(sample_exec(**ev), limits=RecordLimits(env_attributes=1))
    assert (per_variable[keys.ENV_PREFIX + "HOME"], per_variable[keys.ENV_REST]) == ("/root", ["API_TOKEN=[REDACTED]"])
    assert keys.RECORD_CUT not in per_variable and not derived & set(per_variable)
    encode._shared_encodings.clear()
    log, _ = record_attrs(sample_exec(**ev, unavailable=("prev_comm",)))  # what they follow from may be gone
    assert derived - {keys.COMMAND} <= set(log) and log[keys.COMMAND] == "x"


def test_unavailable_fields_keep_the_others_values() -> None:
    ev = sample_exec(unavailable=("argv",))
    log, _ = record_attrs(ev)
    assert log[keys.CGROUP] == "0::/system.slice/docker-" + "ab" * 32 + ".scope"
    assert log[keys.UNAVAILABLE] == ["argv"]


def test_gap_and_observed_records_against_protobuf() -> None:
    rec = encode.gap_record(1_000_000_000, 3_500_000_000, 2.5)
    lr = ExportLogsServiceRequest.FromString(encode.export_request(b"", [rec])).resource_logs[0] \
        .scope_logs[0].log_records[0]
    assert attrs(lr.attributes) == {keys.GAP_START: "1970-01-01T00:00:01.000Z",
                                    keys.GAP_END: "1970-01-01T00:00:03.500Z", keys.GAP_SECONDS: 2.5}
    assert (lr.time_unix_nano, lr.observed_time_unix_nano, lr.severity_number, lr.severity_text) == \
        (3_500_000_000, 3_500_000_000, 13, "WARN")
