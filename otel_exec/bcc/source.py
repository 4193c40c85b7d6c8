"""The BCC event source, for kernels without BTF (docs/backends.md).

BCC compiles bpf/otel_exec_bcc.c at start (program.py). That program reads
no kernel struct, only tracepoint fields, BPF helpers and the syscall's
argv/env in the caller's memory, so kernel headers that do not match the
running kernel are harmless. Its records become the same ExecEvent/ExitEvent
the CO-RE backend produces (join.py): what the kernel side cannot read is
taken from /proc and verified against the kernel's image token, lineage it
did not see is kept in user space (lineage.py), and what cannot be verified
is named in ExecEvent.unavailable.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Callable

from otel_exec.bcc import layout
from otel_exec.bcc.join import RecordJoin
from otel_exec.bcc.lineage import Lineage
from otel_exec.bcc.program import BccProgram
from otel_exec.config import Config
from otel_exec.host import privileges
from otel_exec.host.identity import HostIdentity
from otel_exec.host.wakeup import RingWait, SignalWakeup
from otel_exec.model import counters
from otel_exec.model.events import Event, ExecEvent

log = logging.getLogger(__name__)

CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF, CAP_CHECKPOINT_RESTORE = 2, 19, 39, 40
_LOST_EXIT = layout.COUNTER_NAMES.index(counters.LOST_EXIT_RINGBUF_FULL)


class BccSource:
    """EventSource (agent.EventSource) over the BCC program."""

    # Kept when privileges are dropped after start (otel_exec.host.privileges):
    # /proc/PID/{exe,fd,cwd,auxv,maps,environ,ns} of other users' processes
    # need ptrace read access (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH),
    # /proc/PID/map_files CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN, not kept:
    # without either the interpreter is found by path, checked by inode), and
    # the kernel map lookups (image tokens, counters) go through bpf(2),
    # which kernels before 6.5 refuse without CAP_BPF.
    run_time_capabilities: set[int] = {CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF, CAP_CHECKPOINT_RESTORE}

    def __init__(self, cfg: Config, identity: HostIdentity) -> None:
        privileges.check_can_load_bpf()
        self.decode_errors = 0
        # --path-prefix is decided here: the BCC program cannot read
        # bprm->file, so the resolved path is only known from /proc.
        self.path_prefixes = tuple(cfg.path_prefix)
        self.path_filtered = 0
        self._lost_exits = 0
        self._queue: list[Event] = []
        self.program = BccProgram(cfg)
        self.ring_bytes = cfg.ring_bytes("bcc")
        try:
            self.lineage = Lineage()
            self.join = RecordJoin(cfg, identity, self.program.image_token, self.lineage,
                                   self.program.pid_ns.st_ino)
            self.program.start()
            self.lineage.seed()
            # BCC's own poll (libbpf's ring_buffer__poll) waits on an epoll
            # set whose events name its rings by index, which no other fd
            # may join: this wait, on the ring's fd and the stop signals'
            # (wake_on), comes instead, and drain() consumes what it found.
            self._wait = RingWait(self.program.open_ring(self._on_record))
        except BaseException:
            self.program.close()
            raise

    def wake_on(self, wakeup: SignalWakeup) -> None:
        self._wait.wake_on(wakeup)

    def start(self) -> None:
        """No thread of its own: BCC's reader works in Python."""

    def wait(self, timeout_s: float) -> None:
        if not self._queue:
            self._wait.wait(timeout_s)

    def drain(self, handle: Callable[[Event], None], max_records: int | None = None) -> int:
        self.program.consume()
        self._check_lost_exits()
        queue, self._queue = self._queue, []
        if max_records is not None and len(queue) > max_records:
            queue, self._queue = queue[:max_records], queue[max_records:]
        for ev in queue:
            handle(ev)
        return len(queue)

    def detach(self) -> None:
        self.program.detach()

    def counters(self) -> dict[str, int]:
        out = self.program.counters()
        out["decode_errors"] = self.decode_errors
        out[counters.EXEC_FILTERED] += self.path_filtered
        out["proc_unverified"] = self.join.proc_unverified  # execs whose /proc fields could not be verified
        out["bcc_load_ms"] = round(self.program.load_seconds * 1000)
        return out

    def close(self) -> None:
        self._wait.close()
        self.program.close()

    def _check_lost_exits(self) -> None:
        lost = self.program.counter(_LOST_EXIT)
        if lost != self._lost_exits:
            # A missed exit would leave a stale parent or start time behind.
            self._lost_exits = lost
            self.lineage.distrust()

    def _on_record(self, ctx: object, data: int, size: int) -> int:
        raw = ctypes.string_at(data, size)
        try:
            ev = self.join.add(raw)
            if ev is None:
                return 0
            if type(ev) is ExecEvent and self.path_prefixes and not (
                    ev.pathname.startswith(self.path_prefixes) or ev.cmdpath.startswith(self.path_prefixes)):
                self.path_filtered += 1
            else:
                self._queue.append(ev)
        except Exception as e:  # noqa: BLE001 - a bad record must not stop the agent
            self.decode_errors += 1
            log.error("dropped a malformed BCC record: %r", e)
        return 0
