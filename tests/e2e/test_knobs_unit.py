"""The cost knobs without the kernel: option checks, the path prefix
entries the kernel looks up, decoding of the records they shape, and their
OTLP encoding. tests/e2e/test_knobs.py runs them for real."""
from __future__ import annotations

import io
import json
import os

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_exec import cli

from otel_exec.model import layout

from otel_exec.export.otlp import encode
from otel_exec.host.cgroups import cgroup2_root, resolve
from otel_exec.config import FIELD_GROUPS, Config
from otel_exec.export.console import ConsoleSink, pretty_line
from otel_exec.core.decode import Decoder
from otel_exec.model.events import ExecEvent, SharedExec, UnreportedExecEvent
from otel_exec.core.probes import prefix_entries
from otel_exec.lineage.traceparent import trace_context_entries
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from otel_exec.lineage.proctable import ProcessTable
from tests.helpers.events import attrs, exec_ev, sample_exec
from tests.helpers.records import IDENTITY, build_exec, leaf_first


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def error_of(*argv: str) -> str:
        assert cli.main(["run", *argv]) == 2
        return capsys.readouterr().err

    assert "--sample-rate must be a whole number" in error_of("--sample-rate", "0")
    assert "invalid int value" in error_of("--sample-rate", "1.5")
    assert "give --sample-rate N > 1 too" in error_of("--keep-comm", "make")
    assert "--no-field 'bogus': must be one of argv, env, stdin, interpreter, paths" in \
        error_of("--no-field", "env,bogus")
    assert "must be 1 to 255 bytes" in error_of("--path-prefix", "/" + "x" * 255)
    assert "must be 1 to 255 bytes" in error_of("--keep-path-prefix", "", "--sample-rate", "2")
    assert "comm 'a-name-longer-than-15'" in error_of("--keep-comm", "a-name-longer-than-15", "--sample-rate", "2")
    assert "is not a valid user id" in error_of("--keep-uid", "-1", "--sample-rate", "2")
    err = error_of("--backend", "bcc", "--sample-rate", "10", "--keep-uid", "0", "--no-field", "env")
    assert "--sample-rate, --keep-uid, --no-field: not supported by the BCC backend (--backend bcc)" in err
    if cgroup2_root() is None:
        assert "no cgroup2 file system is mounted" in error_of("--cgroup", "/x")
    else:
        assert "--cgroup /oe-no-such-cgroup: no such cgroup" in error_of("--cgroup", "/oe-no-such-cgroup")
        assert "17 levels deep" in error_of("--cgroup", "/".join(["d"] * 17))


def test_options_bcc_supports_pass_with_bcc() -> None:
    Config(backend="bcc", path_prefix=["/usr"], comm=["x"]).check_backend("bcc", "--backend bcc")


@pytest.mark.needs_cgroup2
def test_cgroup_forms_name_the_same_cgroup() -> None:
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    top = resolve("/")
    assert (top.path, top.level, top.id) == ("/", 0, os.stat(root).st_ino)
    assert resolve(root) == resolve("") == top
    sub = next((e.name for e in os.scandir(root) if e.is_dir()), None)
    if sub is not None:
        assert resolve(sub) == resolve(f"/{sub}/") == resolve(os.path.join(root, sub))
        assert resolve(sub).level == 1


def test_prefix_entries_answer_for_shorter_prefixes() -> None:
    """The kernel gets the longest matching entry only: each carries the
    bits of every configured prefix it starts with."""
    inc, keep = layout.MATCH_INCLUDE, layout.MATCH_KEEP
    entries = prefix_entries(["/usr", "/opt/app"], ["/usr/bin/", "/opt", "/usr"])
    assert entries == {b"/usr": inc | keep, b"/opt/app": inc | keep, b"/usr/bin/": inc | keep, b"/opt": keep}
    assert prefix_entries(["/a/b", "/a"], []) == {b"/a/b": inc, b"/a": inc}
    assert prefix_entries(["/caf\udcc3\udca9"], []) == {b"/caf\xc3\xa9": inc}  # argv bytes, as the kernel has them


def test_not_collected_fields_follow_the_event_order() -> None:
    cfg = Config(no_field=["paths", "argv"])
    assert cfg.not_collected() == ("pwd", "cgroup_path", "container_id", "pathname", "interpreter_pathname", "argv",
                                   "stdin_path", "argv_truncated")
    assert set(FIELD_GROUPS) == {"argv", "env", "stdin", "interpreter", "paths"}


STRS = [b"/bin/true\0", b"/bin/true\0", b"", b"", b"", b"", b"", b"", b""]


def test_decoder_gives_placeholders_for_what_was_not_collected() -> None:
    not_collected = Config(no_field=list(FIELD_GROUPS)).not_collected()
    ev = Decoder(IDENTITY, not_collected=not_collected).decode(build_exec(STRS, argc=1, envc=2))
    assert isinstance(ev, ExecEvent)
    assert ev.unavailable == not_collected
    # An empty path decodes as "/" when it was read: not when it was not.
    assert (ev.pathname, ev.pwd, ev.cgroup_path, ev.container_id) == ("", "", "", None)
    assert (ev.argv, ev.env, ev.argc, ev.envc, ev.cmdpath) == ([], [], 1, 2, "/bin/true")
    read = Decoder(IDENTITY).decode(build_exec(STRS))
    assert (read.pathname, read.pwd, read.unavailable) == ("/", "/", ())


@pytest.mark.parametrize("rate,flags,expect", [
    (1, 0, None), (4, 0, 1), (4, layout.F_SAMPLED, 4), (1000, layout.F_SAMPLED, 1000)])
def test_policy_sample_rate(rate: int, flags: int, expect: int | None) -> None:
    strs = [b"/bin/true\0", b"/bin/true\0", leaf_first([b"bin", b"true"]), b"", b"", b"", b"", b"true\0", b""]
    ev = Decoder(IDENTITY).decode(build_exec(strs, flags=flags))
    ExecPolicy(RedactionPolicy(), rate, trace_context_entries).apply(ev)
    assert isinstance(ev, ExecEvent) and ev.sample_rate == expect


def test_sample_rate_attribute_only_when_sampling() -> None:
    for rate in (None, 1, 10):
        ev = sample_exec(sample_rate=rate)
        enc = encode.exec_attributes(ev)
        a = attrs(LogRecord.FromString(enc.ids.log + enc.common.log).attributes)
        assert a.get("otel_exec.sample_rate") == rate


def test_not_collected_fields_leave_no_attribute_and_no_body() -> None:
    """The CO-RE path (a shared part, encoded once) leaves out the same
    attributes as the per-exec path of the BCC backend."""
    gone = Config(no_field=["argv", "env", "paths"]).not_collected()
    for shared in (SharedExec(()), None):
        ev = sample_exec(unavailable=gone, argv=[], env=[], pathname="", pwd="", cgroup_path="", container_id=None,
                         interpreter_pathname="", stdin_path="", shared=shared)
        enc = encode.exec_attributes(ev)
        a = attrs(LogRecord.FromString(enc.ids.log + enc.common.log).attributes)
        for key in ("process.executable.path", "process.executable.name", "file.path", "process.command",
                    "process.command_args", "process.working_directory", "process.linux.cgroup", "container.id",
                    "otel_exec.stdin.path", "otel_exec.argv_truncated", "otel_exec.env_truncated",
                    "otel_exec.interpreter.path"):
            assert key not in a, key
        assert a["otel_exec.unavailable"] == list(gone)
        assert (a["process.args_count"], a["otel_exec.env_count"], a["file.inode"]) == (4, 3, "12345")
        assert a["otel_exec.stdin.type"] == "chr" and a["otel_exec.interpreter.inode"] == "99"
        assert enc.body == b""


def test_unreported_exec_ends_the_image_of_that_process_only() -> None:
    table = ProcessTable()
    table.on_exec(exec_ev(100, 1, 50, "a" * 32))
    dropped = []
    table.on_drop = dropped.append
    assert table.on_unreported_exec(UnreportedExecEvent(2_000, 100, 51)) is None  # a reused pid's stale entry
    assert [i.pid for i in dropped] == [100] and table.get(100) is None
    table.on_exec(exec_ev(100, 1, 52, "b" * 32))
    ended = table.on_unreported_exec(UnreportedExecEvent(3_000, 100, 52))
    assert ended is not None and ended.exec_id == "b" * 32 and ended.exit_code is None
    assert table.get(100) is None
    assert table.on_unreported_exec(UnreportedExecEvent(4_000, 100, 52)) is None


def test_console_leaves_out_what_was_not_collected() -> None:
    gone = Config(no_field=["paths", "argv"]).not_collected()
    ev = sample_exec(unavailable=gone, argv=[], pathname="", sample_rate=4)
    line = pretty_line(ev)
    assert line.endswith(" sudo: (argv unavailable) (1 of 4)")  # cmdpath in place of the path
    out = io.StringIO()
    console = ConsoleSink(out, "jsonl", gone)
    console.on_exec(ev, None)  # type: ignore[arg-type]
    console.flush()
    obj = json.loads(out.getvalue())
    assert not set(gone) & set(obj) and obj["unavailable"] == list(gone) and obj["sample_rate"] == 4
