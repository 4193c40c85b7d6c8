"""Span lineage: which trace and parent span each process image gets.

Rules, in order (README "Traces"):
1. A valid W3C TRACEPARENT in the image's environment that the image it
   continues (its own previous image, or its parent's image) did not
   already carry unchanged: the application set it, so the process joins
   the application's trace under that span, if --trust-traceparent trusts
   the process's real user (TraceparentTrust); an untrusted one is recorded
   on the span (otel_exec.traceparent.untrusted) and rule 2 applies.
2. Else the span of the image it continues: a re-exec nests under the
   process's previous image, a fork+exec child under its parent's image.
3. Else a new trace rooted at this image.

A span's trace flags come with its parent, as a ParentBased sampler decides:
the TRACEPARENT's as received, the flags of the span it continues, or
sampled for a new trace. A span whose sampled bit is clear is not exported
(the OTLP sink reads `trace_flags`); the exec's log record still is, with
those flags.

Span and trace ids derive from the exec id (for a re-exec, and the exec
time), so the span of a process found again in /proc after an agent restart
keeps its ids, and children started after the restart still nest under it.
Processes found in /proc at start come as observed exec events
(otel_exec.host.procevents), oldest first, on the same path.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable

from otel_exec.errors import UsageError
from otel_exec.host.executables import Slot
from otel_exec.lineage.proctable import LINEAGE_NATIVE, ProcessTable
from otel_exec.model.events import ExecEvent, ExitEvent, UnreportedExecEvent
from otel_exec.model.process import ProcessInfo
from otel_exec.lineage.traceparent import SAMPLED, remote_parent, trace_context_entries
from otel_exec.policy.redact import bounded_tracestate


# An untrusted TRACEPARENT is recorded, not parsed: keep it short.
TRACEPARENT_RECORDED_MAX = 256


def _digest(exec_id: str, salt: int, size: int) -> bytes:
    """Id bytes from an exec id (itself 128 hash bits in hex): its leading
    bytes when unsalted, a hash of it with the salt otherwise. The reference
    of _lineage_native.digest."""
    if salt:
        d = hashlib.blake2b(f"{exec_id}/{salt}".encode(), digest_size=size).digest()
    else:
        try:
            d = bytes.fromhex(exec_id[:2 * size])
        except ValueError:
            d = b""
        if len(d) != size:
            d = hashlib.blake2b(exec_id.encode(), digest_size=size).digest()
    return b"\1" * size if d.count(0) == size else d  # all-zero ids are invalid


# _lineage_native's digest (the same bytes, without a Python frame per id)
# when it is built and native_wanted().
digest: Callable[[str, int, int], bytes] = LINEAGE_NATIVE.digest if LINEAGE_NATIVE is not None else _digest


@dataclass(frozen=True)
class TraceparentTrust:
    """Whose TRACEPARENT may parent a span (--trust-traceparent): every
    process's (``any``), none, or those whose real user id is in ``uids``
    (``root`` is uid 0). The real uid is the user who controlled the
    environment: a set-user-id program run by a user is that user's."""

    any_uid: bool
    uids: frozenset[int]

    @classmethod
    def parse(cls, spec: str) -> TraceparentTrust:
        if spec == "any":
            return cls(True, frozenset())
        if spec == "none":
            return cls(False, frozenset())
        uids: set[int] = set()
        for part in spec.split(","):
            part = part.strip()
            if part == "root":
                uids.add(0)
            elif part.isdigit() and int(part) < 2**32 - 1:
                uids.add(int(part))
            else:
                raise UsageError(f"--trust-traceparent {spec!r}: must be any, none, root, or user ids "
                                 "separated by commas (root,1000)")
        return cls(False, frozenset(uids))

    def trusts(self, uid: int) -> bool:
        return self.any_uid or uid in self.uids


TRUST_ANY = TraceparentTrust(True, frozenset())


# A plain class with slots, not a dataclass: this module is on the start-up
# path (docs/architecture.md, Rules).
class ProcessSpan:
    """The span of one process image: open from its exec (or, found in
    /proc at start, from the process's start) while the process table holds
    the image; handed to the exporters once ended (end_ns, ended_by)."""

    __slots__ = ("process", "trace_id", "span_id", "parent_span_id", "trace_state", "traceparent",
                 "untrusted_traceparent", "start_ns", "trace_flags", "end_ns", "ended_by", "incomplete", "attributes",
                 "late_identity")

    def __init__(self, process: ProcessInfo, trace_id: bytes, span_id: bytes, parent_span_id: bytes,
                 trace_state: str, traceparent: str, untrusted_traceparent: str, start_ns: int,
                 trace_flags: int = SAMPLED, end_ns: int = 0, ended_by: str = "", incomplete: bool = False,
                 attributes: tuple[bytes, ...] = (), late_identity: Slot | None = None) -> None:
        self.process = process  # its exe or comm names the span; exit_code/signal say how it ended
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id  # b"" for a root
        self.trace_state = trace_state
        self.traceparent = traceparent  # TRACEPARENT as this image's environment had it
        # A TRACEPARENT this image set that --trust-traceparent did not follow
        # (bounded and scanned): recorded on its span, not used as its parent.
        self.untrusted_traceparent = untrusted_traceparent
        self.start_ns = start_ns  # ns since epoch
        # W3C trace flags, from the parent (see the module's docstring); bit 0
        # (SAMPLED) clear: the parent was not recorded and neither is this span.
        self.trace_flags = trace_flags
        self.end_ns = end_ns
        self.ended_by = ended_by  # exit, exec (the process exec'd again), evicted, agent_stopped
        self.incomplete = incomplete  # the agent stopped watching before the image ended
        # Encoded Span.attributes parts an exporter attached when the span
        # opened (the OTLP sink: the exec's attributes), kept until it ends.
        self.attributes = attributes
        # The executable identity still being computed when the exec was
        # recorded (otel_exec.host.executables.Slot): it rides on the span.
        self.late_identity = late_identity


# A new ProcessSpan: _lineage_native's new_span (the same slots, without
# __init__'s Python frame) when it is built and native_wanted(), else the
# class itself, the reference.
new_span: Callable[..., ProcessSpan] = ProcessSpan
if LINEAGE_NATIVE is not None:
    LINEAGE_NATIVE.span_class(ProcessSpan)
    new_span = LINEAGE_NATIVE.new_span


def _on_exit(lineage: SpanLineage, ev: ExitEvent) -> None:
    """SpanLineage.on_exit's reference."""
    info = lineage._table_on_exit(ev)
    if info is not None:
        span = lineage._open.pop(info.pid, None)
        if span is not None:
            # _end's work, written out: an exit is most ends, on the hot path.
            span.end_ns, span.ended_by = ev.timestamp, "exit"
            for on_end in lineage.on_end:
                on_end(span)


class SpanLineage:
    """Owns every span's life: opens one per reported image (on_exec), picks
    its trace and parent, and ends it when the image ends: exit, a re-exec
    (reported or not), the table dropping the image (evicted, or stale
    after a missed exit), or the agent stopping (close). Each ended span goes
    to every callable in `on_end` (the sinks).

    `trust`: whose TRACEPARENT is followed; `scrub`: the redaction value
    scan, applied to the trace state spans carry and to an untrusted
    TRACEPARENT recorded on a span; `trace_context`: the context fields of
    an environment (traceparent.TraceContextCarrier.entries, for the
    configured variable names)."""

    def __init__(self, table: ProcessTable, trust: TraceparentTrust = TRUST_ANY,
                 scrub: Callable[[str], str] = lambda value: value,
                 trace_context: Callable[[list[str]], dict[str, str]] = trace_context_entries) -> None:
        self.malformed_traceparent = 0
        self.untrusted_traceparent = 0
        self.trust = trust
        self.scrub = scrub
        self.trace_context = trace_context
        self.table = table
        # The table's per-event methods, bound once: a method of
        # _lineage_native looked up on the table makes a bound method per
        # call, one to three per record.
        self._image_parent = table.image_parent
        self._table_on_exec = table.on_exec
        self._table_on_exit = table.on_exit
        table.on_drop = self._dropped
        self.on_end: list[Callable[[ProcessSpan], None]] = []
        # By host pid: the open span of the image the table holds for it.
        # Every way out of the table passes here (exit, unreported exec,
        # re-exec, on_drop), so the two stay in step.
        self._open: dict[int, ProcessSpan] = {}

    def on_exec(self, ev: ExecEvent) -> ProcessSpan | None:
        """Put ev's image in the table and open its span; the span of the
        image it replaces ends. None for pid 1 and kernel threads found in
        /proc: every process descends from them, and one trace per boot
        would be useless; their children start traces of their own."""
        spans = self._open
        continues = None  # the span this image continues
        parent = self._image_parent(ev)
        if parent is not None:
            if not ev.parent_exec_id:
                ev.parent_exec_id = parent.exec_id  # the kernel could not see the parent's executable
            if parent.exec_id == ev.parent_exec_id:  # else since re-exec'd, or a reused pid
                # Looked up before the table takes the new entry, which may evict the parent.
                continues = spans.get(parent.pid)
        info, previous = self._table_on_exec(ev)
        ended = None
        if previous is not None:
            ended = continues = spans.pop(ev.host_pid, None)
        if ev.observed:
            # Found in /proc: when it exec'd is unknown, its span starts with the process.
            info.seeded_from_proc, info.exec_time = True, None
            if ev.host_pid == 1 or not ev.pathname:
                return None
            start = ev.process_start_time
        else:
            start = ev.timestamp
        # Images of one process can share an exec id (A, B, A again): a
        # re-exec's span id also hashes its exec time. Without an exec id
        # (the BCC backend could not verify one) the ids come from the pid
        # and exec time, unique but not stable across agent restarts.
        key = ev.exec_id or f"{ev.host_pid}@{ev.timestamp}"
        env = ev.env
        # The policy stage keeps it on the decoded block (events.Strings):
        # read there without a call, as trace_context would (a plain list,
        # or a block the policy did not see, has none).
        try:
            ctx = env.trace_context  # type: ignore[attr-defined]
        except AttributeError:
            ctx = self.trace_context(env)
        traceparent = ctx.get("TRACEPARENT", "")
        untrusted = ""
        if continues is not None:
            trace_id, parent_span_id, trace_state, flags = \
                continues.trace_id, continues.span_id, continues.trace_state, continues.trace_flags
        else:
            trace_id, parent_span_id, trace_state, flags = digest(key, 0, 16), b"", "", SAMPLED
        if traceparent and (continues is None or traceparent != continues.traceparent):
            if not self.trust.trusts(ev.uid):
                self.untrusted_traceparent += 1
                untrusted = self.scrub(traceparent[:TRACEPARENT_RECORDED_MAX])
            else:
                remote = remote_parent(ctx)
                if remote is not None:
                    # Scanned once bounded; bounded again, as a hidden value may be longer.
                    trace_id, parent_span_id, trace_state, flags = remote.trace_id, remote.span_id, \
                        bounded_tracestate(self.scrub(remote.trace_state)), remote.flags
                else:
                    self.malformed_traceparent += 1
        span = spans[ev.host_pid] = new_span(
            info, trace_id, digest(key, ev.timestamp if previous is not None else 0, 8), parent_span_id,
            trace_state, traceparent, untrusted, start, flags)
        if ended is not None:
            self._end(ended, ev.timestamp, "exec")
        return span

    # An exit: the table's entry goes, the open span of its image ends.
    # _lineage_native's lineage_on_exit (no Python frame) when it is built
    # and native_wanted(), else _on_exit, its reference.
    on_exit: Callable[[SpanLineage, ExitEvent], None] = \
        LINEAGE_NATIVE.lineage_on_exit if LINEAGE_NATIVE is not None else _on_exit

    def on_unreported_exec(self, ev: UnreportedExecEvent) -> None:
        """The process exec'd an image that is not reported: the span of
        the one it ran until then ends."""
        info = self.table.on_unreported_exec(ev)
        if info is not None:
            span = self._open.pop(info.pid, None)
            if span is not None:
                self._end(span, ev.timestamp, "exec")

    def _dropped(self, info: ProcessInfo) -> None:
        span = self._open.pop(info.pid, None)
        if span is not None:
            self._end(span, time.time_ns(), "evicted", incomplete=True)

    def close(self) -> None:
        """The agent stops: spans still open end now, marked incomplete."""
        now = time.time_ns()
        for info in self.table.entries():
            span = self._open.pop(info.pid, None)
            if span is not None:
                self._end(span, now, "agent_stopped", incomplete=True)

    def _end(self, span: ProcessSpan, end_ns: int, reason: str, incomplete: bool = False) -> None:
        span.end_ns, span.ended_by, span.incomplete = end_ns, reason, incomplete
        for on_end in self.on_end:
            on_end(span)
