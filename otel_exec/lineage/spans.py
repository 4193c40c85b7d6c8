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

Span and trace ids derive from the exec id (for a re-exec, and the exec
time), so the span of a process found again in /proc after an agent restart
keeps its ids, and children started after the restart still nest under it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from otel_exec.errors import UsageError
from otel_exec.model.events import ExecEvent
from otel_exec.host import procfs
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.proctable import ProcessInfo, ProcessTable
from otel_exec.lineage.traceparent import remote_parent, trace_context_entries


# An untrusted TRACEPARENT is recorded, not parsed: keep it short.
TRACEPARENT_RECORDED_MAX = 256


def _digest(exec_id: str, salt: int, size: int) -> bytes:
    """Id bytes from an exec id (itself 128 hash bits in hex): its leading
    bytes when unsalted, a hash of it with the salt otherwise."""
    if salt:
        d = hashlib.blake2b(f"{exec_id}/{salt}".encode(), digest_size=size).digest()
    else:
        try:
            d = bytes.fromhex(exec_id[:2 * size])
        except ValueError:
            d = b""
        if len(d) != size:
            d = hashlib.blake2b(exec_id.encode(), digest_size=size).digest()
    return d if any(d) else b"\1" * size  # all-zero ids are invalid


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


class SpanLineage:
    """`trust`: whose TRACEPARENT is followed; `scrub`: the redaction value
    scan, applied to the trace state spans carry and to an untrusted
    TRACEPARENT recorded on a span."""

    def __init__(self, trust: TraceparentTrust = TRUST_ANY,
                 scrub: Callable[[str], str] = lambda value: value) -> None:
        self.malformed_traceparent = 0
        self.untrusted_traceparent = 0
        self.trust = trust
        self.scrub = scrub

    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None,
                parent: ProcessInfo | None) -> None:
        """Assign info's span; `previous` is the process's own previous
        image, `parent` the table's entry for its image parent."""
        if parent is not None and parent.exec_id != ev.parent_exec_id:
            parent = None  # since re-exec'd, or a reused pid: not the image this one came from
        continues = previous if previous is not None else parent
        # Images of one process can share an exec id (A, B, A again): a
        # re-exec's span id also hashes its exec time. Without an exec id
        # (the BCC backend could not verify one) the ids come from the pid
        # and exec time, unique but not stable across agent restarts.
        key = ev.exec_id or f"{ev.host_pid}@{ev.timestamp}"
        info.span_id = _digest(key, ev.timestamp if previous is not None else 0, 8)
        info.span_start = ev.timestamp
        info.owns_span = True
        self._parent(info, trace_context_entries(ev.env), continues, key, ev.uid)

    def _parent(self, info: ProcessInfo, ctx: dict[str, str], continues: ProcessInfo | None,
                exec_id: str, uid: int | None) -> None:
        traceparent = ctx.get("TRACEPARENT", "")
        info.traceparent = traceparent
        if traceparent and (continues is None or traceparent != continues.traceparent):
            if uid is not None and not self.trust.trusts(uid):
                self.untrusted_traceparent += 1
                info.untrusted_traceparent = self.scrub(traceparent[:TRACEPARENT_RECORDED_MAX])
            else:
                remote = remote_parent(ctx)
                if remote is not None:
                    info.trace_id, info.parent_span_id, info.trace_state = \
                        remote.trace_id, remote.span_id, self.scrub(remote.trace_state)
                    return
                self.malformed_traceparent += 1
        if continues is not None and continues.span_id:
            info.trace_id, info.parent_span_id, info.trace_state = \
                continues.trace_id, continues.span_id, continues.trace_state
        else:
            info.trace_id, info.parent_span_id, info.trace_state = _digest(exec_id, 0, 16), b"", ""

    def seed(self, table: ProcessTable, identity: HostIdentity, proc: str = "/proc") -> None:
        """Spans for the processes found in /proc. pid 1 and kernel threads
        get none: every process descends from them, and one trace per boot
        would be useless; their children start traces of their own."""
        seeded = sorted((i for i in table.entries() if i.seeded_from_proc and not i.owns_span),
                        key=lambda i: i.start_ticks)
        for info in seeded:
            if info.pid == 1 or not info.exe:
                continue
            parent = table.get(info.ppid)
            if parent is not None and parent.start_ticks > info.start_ticks:
                parent = None  # a later holder of a reused pid
            info.span_id = _digest(info.exec_id, 0, 8)
            info.span_start = identity.boot_ns_to_epoch_ns(info.start_ticks * identity.ns_per_tick)
            info.owns_span = True
            if self.trust.any_uid:
                uid = None
            else:
                ids = procfs.status_ids(info.pid, proc)
                uid = -1 if ids is None or ids.uid is None else ids.uid  # -1: trusted by no list
            self._parent(info, trace_context_entries(procfs.environ(info.pid, proc)), parent, info.exec_id, uid)
