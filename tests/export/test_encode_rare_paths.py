"""otel_exec.export.otlp.encode's paths a default record does not take,
pinned value for value: shaping under the OTEL_* value limits (the log's
and the span's, equal or not), a record per exec for a backend with
unavailable fields, the count limits at their edge, the file identity's
room in a shaped record, the native ids' hand-over in exec_attributes,
and the event time read back from a framed record (the export queues'
age)."""
from __future__ import annotations

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_exec.export.otlp import attributes as keys
from otel_exec.export.otlp import encode
from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp import shape
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.host.executables import Slot
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.events import ExecEvent
from otel_exec.model.executable import COMPLETE, ExecutableIdentity
from otel_exec.model.process import ProcessInfo
from tests.helpers.events import attrs, sample_exec

IDENTITY = ExecutableIdentity(COMPLETE, size=35664, sha256="c7" * 32, htlhash="72" * 16, gnu_build_id="c8" * 20)
SCRIPT = ExecutableIdentity(COMPLETE, size=120, sha256="5c" * 32, htlhash="13" * 16)


@pytest.fixture(autouse=True)
def fresh_memos() -> None:
    """Each case starts without the encoder's memos (a mutation tool forks
    its workers from a process that already filled them)."""
    for memo in (encode._heads, encode._seconds, encode._endings, encode._names, encode._identities,
                 encode._exec_identities, encode._shared_encodings, encode._exe_names):
        memo.clear()
    encode._shared_encodings.bytes = 0


def records(ev: ExecEvent, span_set: int, limits: RecordLimits) -> tuple[LogRecord, Span]:
    """The exec's attributes as its LogRecord and its Span carry them,
    checked to be encoded as protobuf encodes them (a count field of 0,
    or any stray byte, would not be)."""
    encode._shared_encodings.clear()
    enc = encode.exec_attributes(ev, span_set, limits)
    log, span = enc.ids.log + enc.common.log, b"".join(enc.span_attrs())
    record, on_span = LogRecord.FromString(log), Span.FromString(span)
    assert record.SerializeToString() == log and on_span.SerializeToString() == span
    return record, on_span


def keys_of(kvs) -> list[str]:
    return [kv.key for kv in kvs]


# -- shaping under OTEL_*_ATTRIBUTE_VALUE_LENGTH_LIMIT -------------------------

CUT_40 = ["process.linux.cgroup", "container.id"]  # sample_exec's values longer than 40 characters


@pytest.mark.parametrize("unavailable", [(), ("prev_comm",)], ids=["all", "prev_comm-unavailable"])
def test_equal_value_limits_cut_the_log_and_the_span_alike(unavailable: tuple[str, ...]) -> None:
    ev = sample_exec(unavailable=unavailable, env=["HOME=" + "h" * 50, "A=b", "BARE"])
    limits = RecordLimits(log_value_length=40, span_value_length=40, env_attributes=48)
    log, _ = records(ev, encode.SPAN_SLIM, limits)
    got = attrs(log.attributes)
    assert got[keys.RECORD_CUT] == CUT_40 + [keys.ENV_PREFIX.rstrip(".")]
    assert got[keys.CONTAINER_ID] == "ab" * 20 and got[keys.ENV_PREFIX + "HOME"] == "h" * 40
    if unavailable:
        assert got[keys.UNAVAILABLE] == ["prev_comm"] and keys.PREV_COMM not in got
        assert keys_of(log.attributes)[:2] == [keys.RECORD_CUT, keys.UNAVAILABLE]
    else:
        assert keys.UNAVAILABLE not in got and got[keys.PREV_COMM] == "bash"
    common = [k for k in keys_of(log.attributes) if k not in encode_ids()]
    for span_set, on_span in ((encode.SPAN_FULL, [k for k in common if not k.startswith(keys.ENV_PREFIX)
                                                   and k not in (keys.ENV_WITHOUT_VALUE, keys.ENV_REST)]),
                              (encode.SPAN_FULL_ENV, common)):
        log_again, span = records(ev, span_set, limits)
        assert log_again == log
        assert [k for k in keys_of(span.attributes) if k not in encode_ids()] == on_span
        assert attrs(span.attributes)[keys.CONTAINER_ID] == "ab" * 20


def encode_ids() -> set[str]:
    return {keys.PID, keys.PARENT_PID, keys.VPID, keys.VPPID, keys.CREATION_TIME, keys.EXEC_ID,
            keys.PARENT_EXEC_ID}


@pytest.mark.parametrize("span_set", [encode.SPAN_FULL, encode.SPAN_FULL_ENV], ids=["full", "full-env"])
def test_a_span_value_limit_of_its_own_cuts_the_span_only(span_set: int) -> None:
    ev = sample_exec(env=["HOME=" + "h" * 50, "A=b", "BARE" * 20], argv=["sudo", "x" * 50], argc=2)
    for log_length in (None, 60):
        log, span = records(ev, span_set, RecordLimits(log_value_length=log_length, span_value_length=40,
                                                       env_attributes=48))
        got, on_span = attrs(log.attributes), attrs(span.attributes)
        assert got[keys.CONTAINER_ID] == ("ab" * 32)[:log_length] and got[keys.COMMAND_ARGS] == ["sudo", "x" * 50]
        assert got[keys.ENV_PREFIX + "HOME"] == "h" * 50
        assert on_span[keys.CONTAINER_ID] == "ab" * 20 and on_span[keys.COMMAND_ARGS] == ["sudo", "x" * 40]
        env_mark = keys.ENV_PREFIX.rstrip(".")
        assert on_span[keys.RECORD_CUT] == [*CUT_40, keys.COMMAND_ARGS, env_mark]
        span_env = {k: v for k, v in on_span.items() if k.startswith(keys.ENV_PREFIX) or k == keys.ENV_WITHOUT_VALUE}
        assert span_env == ({keys.ENV_PREFIX + "HOME": "h" * 40, keys.ENV_PREFIX + "A": "b",
                             keys.ENV_WITHOUT_VALUE: ["BARE" * 10]} if span_set == encode.SPAN_FULL_ENV else {})
        # the count is len(argv): left out of a record that is not cut, kept in one that is
        assert got.get(keys.ARGS_COUNT) == (None if log_length is None else 2) and on_span[keys.ARGS_COUNT] == 2
        if log_length is None:
            assert keys.RECORD_CUT not in got


def test_a_slim_span_under_a_value_limit_and_a_path_past_every_bound() -> None:
    ev = sample_exec()
    _, span = records(ev, encode.SPAN_SLIM, RecordLimits(span_value_length=32))
    assert attrs(span.attributes) == {
        keys.PID: 4242, keys.EXEC_ID: "e" * 32, keys.RECORD_CUT: [keys.CONTAINER_ID],
        keys.EXECUTABLE_PATH: "/usr/bin/sudo", keys.USER_ID: 0, keys.CONTAINER_ID: "ab" * 16}
    assert keys_of(span.attributes)[:3] == [keys.PID, keys.EXEC_ID, keys.RECORD_CUT]
    long_path = "/" + "p" * 5000
    _, span = records(sample_exec(pathname=long_path, container_id=None), encode.SPAN_SLIM, RecordLimits())
    assert attrs(span.attributes) == {
        keys.PID: 4242, keys.EXEC_ID: "e" * 32, keys.RECORD_CUT: [keys.EXECUTABLE_PATH],
        keys.EXECUTABLE_PATH: long_path[:shape.VALUE_MAX_BYTES], keys.USER_ID: 0}
    _, span = records(sample_exec(pathname="/" + "p" * 1500), encode.SPAN_SLIM, RecordLimits())
    assert attrs(span.attributes)[keys.EXECUTABLE_PATH] == "/" + "p" * 1500


# -- records that fit as they are, and those that do not ----------------------

def test_a_long_command_and_a_long_command_line_are_cut_even_when_the_rest_fits() -> None:
    log, _ = records(sample_exec(argv=["a" * 5000], argc=1), encode.SPAN_SLIM, RecordLimits(repeat_derived=True))
    got = attrs(log.attributes)
    assert got[keys.COMMAND] == "a" * shape.VALUE_MAX_BYTES and keys.COMMAND in got[keys.RECORD_CUT]
    argv = ["x"] * 3000  # "x x x ...": 5,999 characters
    encode._shared_encodings.clear()
    enc = encode.exec_attributes(sample_exec(argv=argv, argc=3000), encode.SPAN_SLIM, RecordLimits())
    got = attrs(LogRecord.FromString(enc.common.log).attributes)
    assert got[keys.RECORD_CUT] == [shape.BODY] and got[keys.COMMAND_ARGS] == argv
    assert enc.body == w.len_field(5, w.any_string(("x " * 2048)[:4096]))


def test_an_environment_past_the_byte_budget_is_shaped() -> None:
    env = [f"V{i}=" + "v" * 1500 for i in range(45)]  # 67,500 bytes of values: over the 60,000 of the budget
    log, _ = records(sample_exec(env=env, envc=45), encode.SPAN_SLIM, RecordLimits())
    got = attrs(log.attributes)
    assert got[keys.RECORD_CUT] == [keys.ENV_PREFIX.rstrip(".")]
    kept = sum(len(str(v)) for k, v in got.items() if k.startswith(keys.ENV_PREFIX) or k == keys.ENV_REST)
    assert 30_000 < kept < shape.DEFAULT_MAX_BYTES


def test_no_attributes_frame_nothing() -> None:
    for span_kvs in (0, []):  # the span's: none of the log record's, or its own
        framed, body = encode._limited([], span_kvs, None, RecordLimits(), shape.IDS_COUNT)
        assert (framed.log, framed.span, body) == (b"", b"", b"")


def count_edge(ev: ExecEvent, span_set: int) -> tuple[int, int]:
    """(log count, span count) limits that the exec's attributes fill exactly."""
    log, span = records(ev, span_set, RecordLimits())
    assert log.dropped_attributes_count == span.dropped_attributes_count == 0
    return len(log.attributes), len(span.attributes) + shape.SPAN_END_ATTRIBUTES


def test_attributes_exactly_at_the_count_limits_are_all_kept() -> None:
    ev = sample_exec(env=["A=b"])
    log_count, span_count = count_edge(ev, encode.SPAN_FULL)
    log, span = records(ev, encode.SPAN_FULL, RecordLimits(log_count=log_count, span_count=span_count))
    assert (len(log.attributes), log.dropped_attributes_count) == (log_count, 0)
    assert (len(span.attributes), span.dropped_attributes_count) == (span_count - shape.SPAN_END_ATTRIBUTES, 0)
    log, span = records(ev, encode.SPAN_FULL, RecordLimits(log_count=log_count, span_count=span_count - 1))
    assert (len(span.attributes), span.dropped_attributes_count) == (span_count - shape.SPAN_END_ATTRIBUTES - 1, 1)


@pytest.mark.parametrize("unavailable,identity,script,per_key", [
    ((), None, None, 20), ((), IDENTITY, None, 14), ((), IDENTITY, SCRIPT, 10),
    (("prev_comm",), None, None, 16), (("prev_comm",), IDENTITY, None, 10), (("prev_comm",), IDENTITY, SCRIPT, 6),
], ids=["shared", "shared-executable", "shared-script", "per-exec", "per-exec-executable", "per-exec-script"])
def test_a_record_near_the_count_limit_packs_its_environment_around_the_identity(
        unavailable: tuple[str, ...], identity: ExecutableIdentity | None, script: ExecutableIdentity | None,
        per_key: int) -> None:
    """Shaping counts the ids and keeps room for the file identity (both
    encoded outside it: 6 attributes for an executable's, 4 more for a
    script's): the environment gets what the count limit leaves, per key
    and the rest packed, and nothing is dropped. A record with unavailable
    fields (one more attribute, otel_exec.unavailable, and the derived ones
    sent) leaves it less."""
    env = [f"V{i}=v" for i in range(20)] + ["BARE"]
    ev = sample_exec(env=env, envc=21, executable_identity=identity, script_identity=script,
                     unavailable=unavailable)
    log, _ = records(ev, encode.SPAN_SLIM, RecordLimits(log_count=60, env_attributes=48))
    got = attrs(log.attributes)
    assert log.dropped_attributes_count == 0 and len(log.attributes) <= 60
    assert len([k for k in got if k.startswith(keys.ENV_PREFIX)]) == per_key
    assert got.get(keys.ENV_REST) == ([f"V{i}=v" for i in range(per_key, 20)] or None)
    assert got[keys.ENV_WITHOUT_VALUE] == ["BARE"]


# -- a record encoded whole per exec (unavailable fields) ---------------------

@pytest.mark.parametrize("pids", [(7, 1), (4242, 1), (7, 4000), (4242, 4000)], ids=str)
def test_a_record_with_unavailable_fields_has_the_pids_of_its_namespace_when_they_differ(
        pids: tuple[int, int]) -> None:
    ev = sample_exec(pid=pids[0], ppid=pids[1], unavailable=("prev_comm",))
    log, _ = records(ev, encode.SPAN_SLIM, RecordLimits())
    got = attrs(log.attributes)
    own = pids != (4242, 4000)
    assert (got.get(keys.VPID), got.get(keys.VPPID)) == (pids if own else (None, None))
    assert (got[keys.PID], got[keys.PARENT_PID]) == (4242, 4000)


@pytest.mark.parametrize("identity", [None, IDENTITY], ids=["no-identity", "identity"])
def test_a_record_with_unavailable_fields_on_each_span_set(identity: ExecutableIdentity | None) -> None:
    ev = sample_exec(unavailable=("prev_comm",), cmdpath="/usr/bin/sudo", comm="other", executable_identity=identity)
    log, slim = records(ev, encode.SPAN_SLIM, RecordLimits())
    got = attrs(log.attributes)
    assert got[keys.COMM] == "other" and got[keys.UNAVAILABLE] == ["prev_comm"] and keys.PREV_COMM not in got
    # the attributes a compact record leaves out as derived are sent: what they derive from may be gone
    assert (got[keys.FILE_TYPE], got[keys.COMMAND], got[keys.INTERPRETER_DEV]) == ("reg", "sudo", 65024)
    assert attrs(slim.attributes) == {keys.PID: 4242, keys.EXEC_ID: "e" * 32, keys.EXECUTABLE_PATH: "/usr/bin/sudo",
                                      keys.USER_ID: 0, keys.CONTAINER_ID: "ab" * 32}
    assert (keys.BUILD_ID_HTLHASH in got) == (identity is not None)
    for span_set in (encode.SPAN_FULL, encode.SPAN_FULL_ENV):
        again, full = records(ev, span_set, RecordLimits())
        assert again == log
        on_span = [k for k in keys_of(log.attributes)
                   if span_set == encode.SPAN_FULL_ENV or not k.startswith(keys.ENV_PREFIX)
                   and k not in (keys.ENV_WITHOUT_VALUE, keys.ENV_REST)]
        assert sorted(keys_of(full.attributes)) == sorted(on_span)


# -- exec_attributes: the ids from the native encoder ------------------------

def test_exec_attributes_takes_the_ids_from_the_native_encoder_when_it_has_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[ExecEvent, bool]] = []
    answer: tuple[bytes, bytes] | None = (b"LOG-IDS", b"SPAN-IDS")

    def native_ids(ev: ExecEvent, slim: bool) -> tuple[bytes, bytes] | None:
        asked.append((ev, slim))
        return answer

    for identity in (None, IDENTITY):
        for span_set in (encode.SPAN_SLIM, encode.SPAN_FULL):
            ev = sample_exec(executable_identity=identity)
            monkeypatch.setattr(encode, "_native_exec_ids", None)
            encode._shared_encodings.clear()
            python = encode.exec_attributes(ev, span_set)
            monkeypatch.setattr(encode, "_native_exec_ids", native_ids)
            asked.clear()
            enc = encode.exec_attributes(ev, span_set)
            assert asked == [(ev, span_set == encode.SPAN_SLIM)]
            extra = encode.identity_attrs(ev)
            assert enc.ids.log == b"LOG-IDS" + extra.log
            assert enc.ids.span == b"SPAN-IDS" + (extra.span if span_set != encode.SPAN_SLIM else b"")
            assert (enc.common.log, enc.common.span, enc.body) == (python.common.log, python.common.span,
                                                                   python.body)
    answer = None  # an id the native encoder leaves to encode.py
    ev = sample_exec(executable_identity=IDENTITY)
    enc = encode.exec_attributes(ev, encode.SPAN_FULL)
    monkeypatch.setattr(encode, "_native_exec_ids", None)
    python = encode.exec_attributes(ev, encode.SPAN_FULL)
    assert (enc.ids.log, enc.ids.span) == (python.ids.log, python.ids.span)


def test_span_sets_by_option() -> None:
    assert [encode.span_set(a, env) for a in ("slim", "full") for env in (False, True)] == \
        [encode.SPAN_SLIM, encode.SPAN_FULL_ENV, encode.SPAN_FULL, encode.SPAN_FULL_ENV]


# -- spans and exit records ---------------------------------------------------

def ended_span(exe: str = "/usr/bin/x", **over: object) -> ProcessSpan:
    info = ProcessInfo(7, 1, 0, "a" * 32, "b" * 32, "x", exe, ["x"], False, 1, exit_code=0)
    span = ProcessSpan(info, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"", trace_state="",
                       traceparent="", untrusted_traceparent="", start_ns=10, end_ns=20, ended_by="exit")
    for key, value in over.items():
        setattr(span, key, value)
    return span


def test_an_untrusted_traceparent_and_a_late_identity_both_ride_on_the_span() -> None:
    untrusted = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    for over, want in [
        ({"untrusted_traceparent": untrusted}, {keys.TRACEPARENT_UNTRUSTED: untrusted}),
        ({"late_identity": Slot(IDENTITY)}, {keys.EXECUTABLE_SIZE: 35664}),
        ({"untrusted_traceparent": untrusted, "late_identity": Slot(IDENTITY)},
         {keys.TRACEPARENT_UNTRUSTED: untrusted, keys.EXECUTABLE_SIZE: 35664}),
    ]:
        record = encode._py_span(ended_span(**over))
        message = next(w.fields(record))[2]
        span = Span.FromString(message)
        got = attrs(span.attributes)
        assert {k: got.get(k) for k in want} == want and keys.ENDED_BY in got
        assert (keys.TRACEPARENT_UNTRUSTED in got) == (keys.TRACEPARENT_UNTRUSTED in want)
        assert span.SerializeToString() == message


def test_exit_records_carry_the_executable_name_from_the_memo_which_is_bounded() -> None:
    def names(exe: str) -> list[object]:
        record = encode._py_exit_record(ended_span(exe), 5, True)  # the name: --record-attributes full
        got = attrs(LogRecord.FromString(next(w.fields(record))[2]).attributes)
        return [got.get(keys.EXECUTABLE_NAME)]

    assert names("") == [None]  # a kernel thread: no executable
    assert encode._exe_names == {"": b""}
    one = encode.Attrs.of([encode._kv(keys.EXECUTABLE_NAME, "one")]).log
    assert names("/bin/one") == ["one"] and encode._exe_names == {"": b"", "/bin/one": one}
    encode._exe_names["/bin/memo"] = encode.Attrs.of([encode._kv(keys.EXECUTABLE_NAME, "from-the-memo")]).log
    assert names("/bin/memo") == ["from-the-memo"]
    encode._exe_names.clear()
    encode._exe_names.update({f"/k{i}": b"" for i in range(4095)})
    names("/bin/two")
    assert len(encode._exe_names) == 4096 and "/bin/two" in encode._exe_names
    names("/bin/three")
    assert encode._exe_names == {"/bin/three": encode.Attrs.of([encode._kv(keys.EXECUTABLE_NAME, "three")]).log}


# -- the event time of a framed record ----------------------------------------

I64_VALUE = 0x0102030405060708


def test_the_event_time_is_read_back_from_each_kind_of_record() -> None:
    ev = sample_exec(timestamp=I64_VALUE)
    span = ended_span()
    assert encode.log_time_ns(encode._py_exec_record(ev, span, encode.SPAN_SLIM, RecordLimits(), 5)) == I64_VALUE
    span.start_ns, span.end_ns = 0x1112131415161718, 0x2122232425262728
    assert encode.span_end_ns(encode._py_span(span)) == 0x2122232425262728
    assert encode.log_time_ns(encode._py_exit_record(span, 5)) == 0x2122232425262728
    span.end_ns = 3  # before its start: the span ends at its start
    assert encode.span_end_ns(encode._py_span(span)) == 0x1112131415161718
    assert encode.log_time_ns(encode.gap_record(1, 2**64 - 1, 1.0)) == 2**64 - 1
    assert encode.log_time_ns(encode.observed_record(ev, None, encode.Attrs(b"", b""), 77)) == 77


FIELD_1 = w.tag(1, w.I64) + I64_VALUE.to_bytes(8, "little")


RECORDS = {  # a framed record -> the time in it
    "empty": (b"", None),
    "not-a-message": (w.varint_field(2, 5), None),
    "no-fields": (w.len_field(2, b""), None),
    "field-1-a-varint": (w.len_field(2, w.varint_field(1, 7)), None),
    "field-1-a-fixed32": (w.len_field(2, w.fixed32_field(1, 7)), None),
    "another-fixed64": (w.len_field(2, w.tag(11, w.I64) + bytes(8)), None),
    "after-other-fields": (w.len_field(2, w.len_field(3, b"x") + FIELD_1), I64_VALUE),
    "before-what-is-malformed": (w.len_field(2, FIELD_1 + b"\x07"), I64_VALUE),
    "after-what-is-malformed": (w.len_field(2, b"\x07" + FIELD_1), None),
    "frame-past-the-end": (b"\x12\x0a" + FIELD_1, None),
    "in-a-second-message": (w.len_field(2, b"") + w.len_field(2, FIELD_1), None),  # only the first is the record
}


@pytest.mark.parametrize("record,want", RECORDS.values(), ids=RECORDS.keys())
def test_the_event_time_of_odd_and_malformed_records(record: bytes, want: int | None) -> None:
    assert encode.log_time_ns(record) == want
    assert encode.span_end_ns(record.replace(FIELD_1, w.tag(8, w.I64) + FIELD_1[1:])) == want
    assert encode.span_end_ns(record) is None if want is not None else True


# -- a process found running at start-up --------------------------------------

def test_an_observed_process_is_shaped_under_the_log_value_limit() -> None:
    ev = sample_exec(pathname="/opt/" + "p" * 60, argv=["cmd", "a" * 60])
    got = attrs(LogRecord.FromString(encode.Attrs.of(encode.seeded_attributes(ev, RecordLimits(
        log_value_length=40))).log).attributes)
    assert got[keys.RECORD_CUT] == [keys.EXECUTABLE_PATH, keys.EXECUTABLE_NAME, keys.COMMAND_ARGS]
    assert got[keys.EXECUTABLE_PATH] == ("/opt/" + "p" * 60)[:40] and got[keys.COMMAND_ARGS] == ["cmd", "a" * 40]


@pytest.mark.parametrize("spare,whole", [(0, True), (-1, False)], ids=["to-the-byte", "one-byte-over"])
def test_an_observed_process_s_argv_gets_the_budget_to_the_byte(spare: int, whole: bool) -> None:
    """Its pid and exec ids are among its shaped attributes (no per-exec
    ids are counted apart): the argument list gets all the byte budget
    leaves after them and the room kept for the cut flag."""
    ev = sample_exec(pathname="/usr/bin/cmd", comm="cmd", argv=["cmd", "a" * 3000])
    pairs = [(keys.PID, 4242), (keys.PARENT_PID, 4000), (keys.EXECUTABLE_PATH, "/usr/bin/cmd"),
             (keys.EXECUTABLE_NAME, "cmd"), (keys.COMM, "cmd"), (keys.EXEC_ID, "e" * 32),
             (keys.PARENT_EXEC_ID, "f" * 32), (keys.OBSERVED_FROM, "procfs"), (keys.COMMAND, "cmd"),
             (keys.ARGS_COUNT, 2)]
    attributes = sum(len(k) + shape.value_size(v) for k, v in pairs)
    cut_flag = len(keys.RECORD_CUT) + shape.value_size([keys.COMMAND_ARGS, keys.ENV_PREFIX.rstrip(".")])
    environment = shape.value_size([])  # none: its entries without a value, an empty array
    budget = attributes + cut_flag + len(keys.COMMAND_ARGS) + shape.value_size(ev.argv) + environment + spare
    got = attrs(LogRecord.FromString(encode.Attrs.of(encode.seeded_attributes(ev, RecordLimits(
        max_bytes=budget))).log).attributes)
    assert [k for k, _ in pairs if k not in got] == []
    assert (got[keys.COMMAND_ARGS] == ev.argv) == whole and (keys.RECORD_CUT not in got) == whole


@pytest.mark.parametrize("span_set", [encode.SPAN_SLIM, encode.SPAN_FULL], ids=["slim", "full"])
def test_count_limits_below_the_ids_and_identity_keep_only_those(span_set: int) -> None:
    """OTEL_*_ATTRIBUTE_COUNT_LIMIT at its least (16) and an exec with an
    executable and a script identity (7 ids, 10 attributes kept for the
    identity): the ids and the identity stay, every other attribute is
    dropped and counted (under a count limit the environment is packed
    into fewer attributes first)."""
    ev = sample_exec(executable_identity=IDENTITY, script_identity=SCRIPT)
    limits = RecordLimits(log_count=shape.MIN_COUNT_LIMIT, span_count=shape.MIN_COUNT_LIMIT)
    encode._shared_encodings.clear()
    enc = encode.exec_attributes(ev, span_set, limits)
    log = LogRecord.FromString(enc.ids.log + enc.common.log)
    ids = LogRecord.FromString(enc.ids.log)
    common = encode.exec_attributes(sample_exec(executable_identity=IDENTITY, script_identity=SCRIPT, host_pid=1),
                                    span_set).common
    unlimited = len(LogRecord.FromString(common.log).attributes)
    assert keys_of(log.attributes) == keys_of(ids.attributes)
    assert unlimited - 2 <= log.dropped_attributes_count <= unlimited  # the environment packed: fewer
    if span_set == encode.SPAN_FULL:
        span = Span.FromString(b"".join(enc.span_attrs()))
        assert keys_of(span.attributes) == keys_of(Span.FromString(enc.ids.span).attributes)
        assert 0 < span.dropped_attributes_count <= len(Span.FromString(common.span).attributes)
