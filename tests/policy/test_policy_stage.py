"""The policy stage (otel_exec.policy.stage): redaction once per distinct
argv/env block, in place, for decoded blocks (CO-RE and BCC) and plain
lists alike; lineage's trace context kept from before redaction."""
from __future__ import annotations

from collections.abc import Sequence

from otel_exec.core.decode import Decoder
from otel_exec.lineage.traceparent import trace_context_entries
from otel_exec.model.events import ExecEvent, Strings
from otel_exec.policy.redact import REDACTED, RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from tests.helpers.records import IDENTITY, block, build_exec, leaf_first
from tests.helpers.events import sample_exec

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class CountingPolicy(RedactionPolicy):
    def __init__(self, env_capture: str = "redacted") -> None:
        super().__init__(env_capture)  # type: ignore[arg-type]
        self.calls = {"argv": 0, "env": 0}

    def argv(self, argv: Sequence[str]) -> list[str]:
        self.calls["argv"] += 1
        return super().argv(argv)

    def env(self, env: Sequence[str]) -> list[str]:
        self.calls["env"] += 1
        return super().env(env)


def record(pid: int, argv: list[bytes], env: list[bytes]) -> bytes:
    strs = [b"/usr/bin/mysql\0", b"", leaf_first([b"usr", b"bin", b"mysql"]), b"", b"", b"", b"", block(argv),
            block(env)]
    return build_exec(strs, pid=pid, host_pid=pid, argc=len(argv), envc=len(env))


def test_each_distinct_block_is_redacted_once_in_place() -> None:
    redaction = CountingPolicy()
    policy = ExecPolicy(redaction, 1, trace_context_entries)
    decoder = Decoder(IDENTITY)
    env = [b"API_TOKEN=s3cr3t", b"TRACEPARENT=" + TP.encode(), b"PATH=/bin"]
    # A block seen once is decoded (and redacted) on its own: the memos keep
    # what repeats, from its second sighting on.
    once = decoder.decode(record(9, [b"mysql", b"-pHunter2", b"db"], env))
    assert isinstance(once, ExecEvent)
    policy.apply(once)
    events = []
    for pid in (10, 11, 12):
        ev = decoder.decode(record(pid, [b"mysql", b"-pHunter2", b"db"], env))
        assert isinstance(ev, ExecEvent)
        policy.apply(ev)
        events.append(ev)
    other = decoder.decode(record(13, [b"mysql", b"-pOther", b"db"], env))
    assert isinstance(other, ExecEvent)
    policy.apply(other)
    for ev in (once, *events):
        assert ev.argv == ["mysql", f"-p{REDACTED}", "db"]
        assert ev.env == [f"API_TOKEN={REDACTED}", f"TRACEPARENT={TP}", "PATH=/bin"]
    for ev in events:
        assert ev.argv is events[0].argv and ev.env is events[0].env
    assert once.argv is not events[0].argv
    assert other.argv == ["mysql", f"-p{REDACTED}", "db"] and other.env is events[0].env
    assert redaction.calls == {"argv": 3, "env": 2}
    # The decoder's caches hold the redacted block: a later exec gets it as is.
    again = decoder.decode(record(14, [b"mysql", b"-pOther", b"db"], env))
    assert isinstance(again, ExecEvent)
    policy.apply(again)
    later = decoder.decode(record(15, [b"mysql", b"-pOther", b"db"], env))
    assert isinstance(later, ExecEvent) and later.argv is again.argv and later.argv == other.argv


def test_lineage_reads_the_trace_context_from_before_redaction() -> None:
    policy = ExecPolicy(RedactionPolicy("none"), 1, trace_context_entries)
    ev = Decoder(IDENTITY).decode(record(10, [b"true"], [b"TRACEPARENT=" + TP.encode(), b"PATH=/bin"]))
    assert isinstance(ev, ExecEvent)
    policy.apply(ev)
    assert ev.env == [] and trace_context_entries(ev.env) == {"TRACEPARENT": TP}


def test_plain_lists_become_redacted_blocks() -> None:
    """The BCC backend hands over [] for an argv or env it could not read;
    any list gets the same treatment as a decoded block."""
    policy = ExecPolicy(RedactionPolicy(), 1, trace_context_entries)
    ev = sample_exec(argv=["curl", "-u", "me:pw", "https://x"], env=["PASSWORD=x", f"TRACEPARENT={TP}"])
    policy.apply(ev)
    assert isinstance(ev.argv, Strings) and isinstance(ev.env, Strings)
    assert ev.argv == ["curl", "-u", f"me:{REDACTED}", "https://x"]
    assert ev.env == [f"PASSWORD={REDACTED}", f"TRACEPARENT={TP}"]
    assert trace_context_entries(ev.env) == {"TRACEPARENT": TP}
    decoded = Strings(["mysql", "-pX"])
    mixed = sample_exec(argv=decoded, env=[])
    policy.apply(mixed)
    assert mixed.argv is decoded and decoded == ["mysql", f"-p{REDACTED}"] and mixed.env == []
