"""The BCC event source, for kernels without BTF (docs/backends.md).

BCC compiles bpf/otel_exec_bcc.c at start. That program reads no kernel
struct, only tracepoint fields, BPF helpers and the syscall's argv/env in
the caller's memory, so kernel headers that do not match the running
kernel are harmless. This module turns its records into the same
ExecEvent/ExitEvent the CO-RE backend produces:

- from the kernel records (always): timestamp, host_pid/host_tid, uid, gid,
  comm, cgroup_id, cmdpath, argv/env as passed to execve(at) (with the same
  bound, truncation and redaction as CO-RE), prev_comm, interp (6.10+:
  sched_prepare_exec), and lineage kept in a kernel map: host_ppid while the
  parent that forked the process is alive, image_ppid when the parent's
  image began while the agent ran, invoked_from_kernel, the start time when
  the fork was seen; pid/tid/ppid/pid_ns for processes in the agent's pid
  namespace (bpf_get_ns_current_pid_tgid);
- from /proc/PID, read when the exec record arrives and accepted only if the
  kernel map still holds this exec's image token afterwards (no later exec,
  no exit, so no pid reuse, in between): the executable (pathname, dev,
  inode, ctime, inode_mode), the ELF interpreter (auxv AT_BASE + the
  mapping), stdin, pwd, euid/egid, namespaces, hostname, start time, the
  post-#! argv of scripts, and from those exec_id;
- cgroup_path (and container_id) from cgroup_id, by the inode numbers of
  the cgroup2 directories.
What cannot be verified is left empty and named in ExecEvent.unavailable.
"""
from __future__ import annotations

import ctypes
import os
import re
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from otel_exec.bcc import toolchain
from otel_exec.host.cgroups import cgroup2_root
from otel_exec.host.cgroups import resolve as resolve_cgroup
from otel_exec.config import Config
from otel_exec.core.decode import BlockCache, container_id, text
from otel_exec.errors import BccError, BpfError, BpfLoadError
from otel_exec.model.events import Event, ExecEvent, ExitEvent
from otel_exec.host import procfs
from otel_exec.host.identity import HostIdentity
from otel_exec.model.layout import ARGS_MAX, CGROUP_DEPTH_MAX
from otel_exec.core.probes import check_privileges
from otel_exec.host.tracefs import ensure_tracefs

PROGRAM = "otel_exec_bcc.c"
MIN_KERNEL = (5, 8)  # BPF ring buffer, bpf_ktime_get_boot_ns
# Tests emulate older kernels by hiding optional tracepoints:
# OTEL_EXEC_BCC_DISABLE=sched_prepare_exec,group_dead
DISABLE_ENV = "OTEL_EXEC_BCC_DISABLE"

REC_ARGS, REC_PREP, REC_EXEC, REC_EXIT, REC_DISCARD = 11, 12, 13, 14, 15
HDR = struct.Struct("<IIQ")
ARGS = struct.Struct("<IIQ6I16s")
PREP = struct.Struct("<IIQ2I16s")
EXEC = struct.Struct("<IIQ7Q10I16s")
EXIT = struct.Struct("<IIQ2Q2I16s")
DISCARD = struct.Struct("<IIQ2IQ")

A_ARGV_CUT, A_ENV_CUT, A_ARGV_UNREADABLE, A_ENV_UNREADABLE, A_ARGC_UNKNOWN, A_ENVC_UNKNOWN = 1, 2, 4, 8, 16, 32
E_HOST_PID_NS, E_PARENT_KTHREAD, E_IMAGE_KNOWN, E_START_KNOWN, E_FILENAME_CUT = 1, 2, 4, 8, 16
P_UNKNOWN, P_ALIVE, P_PARENT_OF, P_PREEXISTING = 0, 1, 2, 3

COUNTER_NAMES = (
    "exec_seen", "exec_filtered", "lost_exec_ringbuf_full", "lost_args_ringbuf_full",
    "lost_prep_ringbuf_full", "lost_exit_ringbuf_full", "lost_discard_ringbuf_full", "lost_no_scratch",
    "cut_argv", "cut_env", "cut_string", "read_error", "map_full_procs", "map_full_pending",
)
_LOST_EXIT = COUNTER_NAMES.index("lost_exit_ringbuf_full")

CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF, CAP_CHECKPOINT_RESTORE = 2, 19, 39, 40
# Margin for comparing the kernel's task start time with the BPF clock
# reads around it (both CLOCK_BOOTTIME; the BPF helper is the NMI-safe
# accessor, which may lag the other by a little).
START_MARGIN_NS = 50_000
_PENDING_MAX = 4096
_PENDING_BYTES_MAX = 32 << 20
_IMAGES_MAX = 65536
_STR_MAX = 4096

def program_path() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "bpf" / PROGRAM, package / "_bpf" / PROGRAM):
        if candidate.exists():
            return candidate
    raise BpfError(f"{PROGRAM} is missing: it ships in bpf/ (or otel_exec/_bpf/ when installed)")


def possible_cpus() -> int:
    """Highest possible CPU + 1: bpf_get_smp_processor_id() stays below it."""
    try:
        spec = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(int(part.split("-")[-1]) for part in spec.split(",")) + 1
    except (OSError, ValueError):
        return os.sysconf("SC_NPROCESSORS_CONF")


def kernel_version(release: str | None = None) -> tuple[int, int, int]:
    nums = [int(x) for x in re.findall(r"\d+", release or os.uname().release)[:3]]
    return tuple((nums + [0, 0, 0])[:3])  # type: ignore[return-value]


def tracepoint_features(tracefs: str, disabled: set[str]) -> dict[str, bool]:
    """Which optional tracepoints (and fields) this kernel has."""
    ev = Path(tracefs) / "events"

    def has(cat: str, name: str) -> bool:
        return name not in disabled and (ev / cat / name).is_dir()

    try:
        exit_format = (ev / "sched" / "sched_process_exit" / "format").read_text()
    except OSError:
        exit_format = ""
    return {
        "SYS_ENTER_EXECVE": has("syscalls", "sys_enter_execve"),
        "SYS_ENTER_EXECVEAT": has("syscalls", "sys_enter_execveat"),
        "SYS_EXIT_EXECVE": has("syscalls", "sys_exit_execve"),
        "SYS_EXIT_EXECVEAT": has("syscalls", "sys_exit_execveat"),
        "SYS_ENTER_CLONE": has("syscalls", "sys_enter_clone"),
        "SYS_ENTER_CLONE3": has("syscalls", "sys_enter_clone3"),
        "SYS_ENTER_FORK": has("syscalls", "sys_enter_fork"),
        "SYS_ENTER_VFORK": has("syscalls", "sys_enter_vfork"),
        "SCHED_PREPARE_EXEC": has("sched", "sched_prepare_exec"),
        "GROUP_DEAD": "group_dead" not in disabled and " group_dead;" in exit_format,
    }


class _StderrCapture:
    """libbcc reports compile errors and the verifier's log on fd 2: keep
    them for the error message instead of spilling them on the terminal."""

    def __enter__(self) -> _StderrCapture:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)

    def tail(self, lines: int = 25) -> str:
        self._file.seek(0)
        out = self._file.read().decode(errors="replace").strip().splitlines()
        self._file.close()
        return "\n".join(out[-lines:])


@dataclass(slots=True)
class _Args:
    boot_ns: int
    flags: int
    argc: int
    envc: int
    comm: bytes
    argv: bytes
    env: bytes


@dataclass(slots=True)
class _Prep:
    boot_ns: int
    comm: bytes
    interp: bytes
    cut: bool


@dataclass(slots=True)
class _Known:
    """What user space knows of the current holder of a host pid: its
    parent (None once that died: reparented) and start time."""

    ppid: int | None
    ppid_kthread: bool
    start_ticks: int | None


class CgroupPaths:
    """cgroup v2 id (bpf_get_current_cgroup_id, the directory's inode
    number) -> its path in the hierarchy, by a walk of the cgroup2 mount.
    Ids are not reused within a boot, so a mapping once found stays right."""

    def __init__(self) -> None:
        self.root = cgroup2_root()
        self._paths: dict[int, str] = {}
        self._scanned = 0.0

    def path(self, cgroup_id: int) -> str | None:
        hit = self._paths.get(cgroup_id)
        if hit is None and self.root and time.monotonic() - self._scanned > 0.05:
            self._scan()
            hit = self._paths.get(cgroup_id)
        return hit

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        root = os.fsencode(self.root or "")
        paths: dict[int, str] = {}
        try:
            paths[os.stat(root).st_ino] = "/"
        except OSError:
            return
        stack = [(root, b"")]
        while stack:
            d, rel = stack.pop()
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            sub = rel + b"/" + e.name
                            paths[e.inode()] = text(sub)
                            stack.append((e.path, sub))
            except OSError:
                continue
        self._paths = paths


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

    def __init__(self, cfg: Config, identity: HostIdentity, log: TextIO) -> None:
        check_privileges()
        if kernel_version()[:2] < MIN_KERNEL:
            raise BccError(f"the BCC backend needs Linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or later "
                           f"(BPF ring buffer); this is {os.uname().release}")
        tracefs = ensure_tracefs()
        try:
            bcc = toolchain.import_bcc()
        except ImportError as e:
            raise BccError(f"the BCC backend cannot run: {e}; install: {toolchain.install_hint()}") from None
        problem = toolchain.headers_problem()
        if problem:
            raise BccError(f"the BCC backend cannot run: {problem}; install: {toolchain.install_hint()}")
        self.cfg = cfg
        self.identity = identity
        self.log = log
        self.argv_blocks = BlockCache()
        self.env_blocks = BlockCache()
        self.decode_errors = 0
        self.proc_unverified = 0
        # --path-prefix is decided here: the BCC program cannot read
        # bprm->file, so the resolved path is only known from /proc.
        self.path_prefixes = tuple(cfg.path_prefix)
        self.path_filtered = 0
        self.kernel_518 = kernel_version() >= (5, 18, 0)
        disabled = {x.strip() for x in os.environ.get(DISABLE_ENV, "").split(",") if x.strip()}
        self.features = tracepoint_features(tracefs, disabled)
        for required in ("sched/sched_process_exec", "sched/sched_process_fork", "sched/sched_process_exit",
                         "task/task_newtask"):
            if not (Path(tracefs) / "events" / required).is_dir():
                raise BccError(f"the BCC backend needs the tracepoint {required.replace('/', ':')}, "
                               f"which this kernel lacks")
        self._self_ns = os.stat("/proc/self/ns/pid")
        self._self_uts = os.stat("/proc/self/ns/uts").st_ino
        self.hostname = socket.gethostname()
        self.cgroups = CgroupPaths()
        self._pending_args: dict[int, _Args] = {}
        self._pending_bytes = 0
        self._pending_prep: dict[int, _Prep] = {}
        self._known: dict[int, _Known] = {}
        self._children: dict[int, set[int]] = {}
        self._kthreads: set[int] = {0}
        self._known_since = 1 << 63  # seed knowledge holds for events after this boot time
        self._lost_exits = 0
        self._images: dict[tuple[int, int], str] = {}
        self._queue: list[Event] = []

        self.bpf = self._load(bcc, tracefs)
        try:
            self._procs = self.bpf["procs"]
            self._counters = self.bpf["counters"]
            self._fill_filters()
            self.bpf["control"][ctypes.c_int(0)] = ctypes.c_uint64(1)
            self._seed()
            self.bpf["events"].open_ring_buffer(self._on_record)
        except BaseException:
            self.bpf.cleanup()
            raise

    # --- loading -------------------------------------------------------------

    def _defines(self) -> dict[str, int]:
        cfg = self.cfg
        ns = self._self_ns
        defines = {
            "OE_SELF_TGID": os.getpid(),
            # env is read even with --env-capture none: TRACEPARENT lives there.
            "OE_ARGV_MAX": cfg.argv_max_bytes,
            "OE_ENV_MAX": cfg.env_max_bytes,
            "OE_RINGBUF_PAGES": max(cfg.ringbuf_bytes // os.sysconf("SC_PAGE_SIZE"), 1),
            "OE_NCPUS": possible_cpus(),
            "OE_PROCS_MAX": max(cfg.process_table_size, 65536),
            "OE_HOST_PIDNS_DEV": ns.st_dev,
            "OE_HOST_PIDNS_INO": ns.st_ino,
        }
        for name, present in self.features.items():
            if present:
                defines[f"OE_HAVE_{name}"] = 1
        if cfg.comm:
            defines["OE_FILTER_COMM_INCLUDE"] = 1
        if cfg.exclude_comm:
            defines["OE_FILTER_COMM_EXCLUDE"] = 1
        if cfg.uid:
            defines["OE_FILTER_UID"] = 1
        if cfg.container_only:
            defines["OE_CONTAINER_ONLY"] = 1
        if cfg.cgroup:
            defines["OE_FILTER_CGROUP"] = 1
            defines["OE_CGROUP_DEPTH_MAX"] = CGROUP_DEPTH_MAX
        return defines

    def _load(self, bcc, tracefs: str):  # -> bcc.BPF
        path = program_path()
        source = "".join(f"#define {k} {v}\n" for k, v in self._defines().items()) + path.read_text()
        t0 = time.monotonic()
        with _StderrCapture() as captured:
            try:
                b = bcc.BPF(text=source.encode())
            except Exception as e:
                raise BpfLoadError(f"BCC could not compile or load {path.name}: {e}", captured.tail()) from None
            try:
                for index, name in enumerate((b"oe_copy", b"oe_count")):
                    fn = b.load_func(name, bcc.BPF.TRACEPOINT)
                    b["tails"][ctypes.c_int(index)] = ctypes.c_int(fn.fd)
            except Exception as e:
                b.cleanup()
                raise BpfLoadError(f"BCC could not load {path.name}: {e}", captured.tail()) from None
        self.load_seconds = time.monotonic() - t0
        return b

    def _fill_filters(self) -> None:
        comms = self.bpf["comm_filter"]
        for names, mode in ((self.cfg.comm, 1), (self.cfg.exclude_comm, 2)):
            for name in names:
                key = comms.Key()
                key.c = name.encode()[:15]
                comms[key] = ctypes.c_uint8(mode)
        uids = self.bpf["uid_filter"]
        for uid in self.cfg.uid:
            uids[ctypes.c_uint32(uid)] = ctypes.c_uint8(1)
        cgroup_ids = self.bpf["cgroup_filter"]
        for spec in self.cfg.cgroup:
            cgroup_ids[ctypes.c_uint64(resolve_cgroup(spec).id)] = ctypes.c_uint8(1)

    def _seed(self) -> None:
        """Parents and start times of the processes running now, for execs
        of processes whose fork the kernel side did not see."""
        known, children, kthreads = self._known, self._children, self._kthreads
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fields = procfs.stat_fields(procfs.read(f"/proc/{name}/stat"))
            except OSError:
                continue
            if len(fields) <= procfs.STAT_STARTTIME or fields[procfs.STAT_STATE] in procfs.GONE_STATES:
                continue
            pid, ppid = int(name), int(fields[procfs.STAT_PPID])
            if int(fields[procfs.STAT_FLAGS]) & procfs.PF_KTHREAD:
                kthreads.add(pid)
            known[pid] = _Known(ppid, False, int(fields[procfs.STAT_STARTTIME]))
            children.setdefault(ppid, set()).add(pid)
        for k in known.values():
            k.ppid_kthread = k.ppid in kthreads
        self._known_since = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    # --- EventSource ----------------------------------------------------------

    def wait(self, timeout_s: float) -> None:
        if not self._queue:
            self.bpf.ring_buffer_poll(max(int(timeout_s * 1000), 1))

    def drain(self, handle: Callable[[Event], None]) -> int:
        self.bpf.ring_buffer_consume()
        self._check_lost_exits()
        queue, self._queue = self._queue, []
        for ev in queue:
            handle(ev)
        return len(queue)

    def detach(self) -> None:
        for tp in list(self.bpf.tracepoint_fds):
            self.bpf.detach_tracepoint(tp)

    def counters(self) -> dict[str, int]:
        counters = self._counters
        out = {name: int(counters.sum(counters.Key(i)).value) for i, name in enumerate(COUNTER_NAMES)}
        out["decode_errors"] = self.decode_errors
        out["exec_filtered"] += self.path_filtered
        out["proc_unverified"] = self.proc_unverified  # execs whose /proc fields could not be verified
        out["bcc_load_ms"] = round(self.load_seconds * 1000)
        return out

    def close(self) -> None:
        self.bpf.cleanup()

    # --- records ----------------------------------------------------------------

    def _check_lost_exits(self) -> None:
        counters = self._counters
        lost = int(counters.sum(counters.Key(_LOST_EXIT)).value)
        if lost != self._lost_exits:
            # A missed exit would leave a stale parent or start time behind:
            # stop trusting what was learnt from /proc at start.
            self._lost_exits = lost
            self._known.clear()
            self._children.clear()
            self._known_since = 1 << 63

    def _on_record(self, ctx: object, data: int, size: int) -> int:
        raw = ctypes.string_at(data, size)
        try:
            rtype, rsize, _ = HDR.unpack_from(raw)
            if rsize > len(raw):
                raise ValueError(f"record says {rsize} bytes, {len(raw)} were read")
            if rtype == REC_EXEC:
                ev = self._exec(raw)
                if not self.path_prefixes or ev.pathname.startswith(self.path_prefixes) \
                        or ev.cmdpath.startswith(self.path_prefixes):
                    self._queue.append(ev)
                else:
                    self.path_filtered += 1
            elif rtype == REC_ARGS:
                self._args(raw)
            elif rtype == REC_PREP:
                self._prep(raw)
            elif rtype == REC_EXIT:
                self._queue.append(self._exit(raw))
            elif rtype == REC_DISCARD:
                _, _, _, tid, _, args_ns = DISCARD.unpack_from(raw)
                args = self._pending_args.get(tid)
                if args is not None and args.boot_ns == args_ns:
                    self._drop_args(tid)
            else:
                raise ValueError(f"unknown record type {rtype}")
        except Exception as e:  # noqa: BLE001 - a bad record must not stop the agent
            self.decode_errors += 1
            print(f"otel-exec: dropped a malformed BCC record: {e!r}", file=self.log)
        return 0

    def _drop_args(self, tid: int) -> None:
        old = self._pending_args.pop(tid, None)
        if old is not None:
            self._pending_bytes -= len(old.argv) + len(old.env)

    def _args(self, raw: bytes) -> None:
        _, size, boot_ns, tid, flags, argc, envc, argv_len, env_len, comm = ARGS.unpack_from(raw)
        pos = ARGS.size
        if pos + argv_len + env_len != size:
            raise ValueError(f"ARGS of {size} bytes holds {argv_len} + {env_len} after its header")
        self._drop_args(tid)
        args = _Args(boot_ns, flags, argc, envc, comm, raw[pos:pos + argv_len], raw[pos + argv_len:size])
        self._pending_args[tid] = args
        self._pending_bytes += argv_len + env_len
        while len(self._pending_args) > _PENDING_MAX or self._pending_bytes > _PENDING_BYTES_MAX:
            self._drop_args(next(iter(self._pending_args)))

    def _prep(self, raw: bytes) -> None:
        _, size, boot_ns, tid, interp_len, comm = PREP.unpack_from(raw)
        interp = raw[PREP.size:PREP.size + interp_len]
        if PREP.size + interp_len != size:
            raise ValueError(f"PREP of {size} bytes holds a {interp_len}-byte interp")
        self._pending_prep[tid] = _Prep(boot_ns, comm, interp.split(b"\0", 1)[0], interp_len >= _STR_MAX)
        if len(self._pending_prep) > _PENDING_MAX:
            del self._pending_prep[next(iter(self._pending_prep))]

    # --- lineage knowledge kept from exits and execs --------------------------

    def _forget(self, pid: int) -> _Known | None:
        k = self._known.pop(pid, None)
        if k is not None and k.ppid is not None:
            siblings = self._children.get(k.ppid)
            if siblings is not None:
                siblings.discard(pid)
        for child in self._children.pop(pid, ()):
            c = self._known.get(child)
            if c is not None and c.ppid == pid:
                c.ppid = None  # reparented
        self._kthreads.discard(pid)
        return k

    def _learn(self, pid: int, ppid: int | None, ppid_kthread: bool, start_ticks: int | None) -> None:
        self._forget_quiet(pid)
        self._known[pid] = _Known(ppid, ppid_kthread, start_ticks)
        if ppid is not None:
            self._children.setdefault(ppid, set()).add(pid)

    def _forget_quiet(self, pid: int) -> None:
        k = self._known.pop(pid, None)
        if k is not None and k.ppid is not None:
            siblings = self._children.get(k.ppid)
            if siblings is not None:
                siblings.discard(pid)

    def _trusted(self, pid: int, boot_ns: int) -> _Known | None:
        if boot_ns <= self._known_since:
            return None
        return self._known.get(pid)

    def _start_from_bounds(self, lo: int, hi: int) -> int | None:
        if not lo or not hi:
            return None
        ticks = self.identity.ticks_from_boot_ns
        a, b = ticks(max(lo - START_MARGIN_NS, 0)), ticks(hi + START_MARGIN_NS)
        return a if a == b else None

    def _exit(self, raw: bytes) -> ExitEvent:
        _, _, boot_ns, start_lo, start_hi, pid, flags, comm = EXIT.unpack_from(raw)
        start = self._start_from_bounds(start_lo, start_hi) if flags & 1 else None
        known = self._forget(pid)
        if start is None and known is not None and boot_ns > self._known_since:
            start = known.start_ticks
        return ExitEvent(
            timestamp=self.identity.boot_ns_to_epoch_ns(boot_ns),
            pid=pid,
            start_ticks=start or 0,
            exit_code=None,  # not in any tracepoint: unavailable (docs/backends.md)
            signal=None,
            core_dumped=False,
            comm=text(comm.split(b"\0", 1)[0]),
        )

    # --- /proc ----------------------------------------------------------------

    def _image_token(self, pid: int) -> tuple[int, int] | None:
        """(life, image token) of the kernel's entry for pid, if any."""
        try:
            v = self._procs[self._procs.Key(pid)]
        except KeyError:
            return None
        return v.life, v.img_token

    # --- exec -------------------------------------------------------------------

    def _exec(self, raw: bytes) -> ExecEvent:
        (_, size, boot_ns, cgroup_id, args_ns, prep_ns, start_lo, start_hi, parent_image, ppid_life,
         host_pid, host_tid, old_tid, uid, gid, ppid, parent_kind, image_ppid, flags, filename_len,
         comm) = EXEC.unpack_from(raw)
        if EXEC.size + filename_len != size:
            raise ValueError(f"EXEC of {size} bytes holds a {filename_len}-byte filename")
        ident = self.identity
        missing: set[str] = set()
        cmdpath_raw = raw[EXEC.size:size].split(b"\0", 1)[0]
        cmdpath = text(cmdpath_raw)
        path_truncated = ["cmdpath"] if flags & E_FILENAME_CUT else []

        args = self._pending_args.get(old_tid)
        if args is not None and args.boot_ns == args_ns and args_ns:
            self._drop_args(old_tid)
        else:
            args = None
        prep = self._pending_prep.pop(old_tid, None)
        if prep is not None and (prep.boot_ns != prep_ns or not prep_ns):
            prep = None

        # Is it a #! script (or binfmt_misc), whose argv the kernel rewrote?
        is_script: bool | None = None
        if prep is not None:
            is_script = prep.interp != cmdpath_raw

        # The process's argv tells scripts apart on kernels without
        # sched_prepare_exec, and checks the argv read at the syscall.
        want_cmdline = True
        want_environ = args is None or bool(args.flags & A_ENV_UNREADABLE)
        snap = procfs.snapshot(host_pid, want_cmdline, want_environ, 2 * ARGS_MAX + _STR_MAX * 4)
        if snap is not None:
            token = self._image_token(host_pid)
            if token is None or token[1] != boot_ns:
                snap = None  # exec'd again or exited since: not this image
        if snap is None:
            self.proc_unverified += 1
        in_host_ns = bool(flags & E_HOST_PID_NS)

        # Parent
        host_ppid: int | None = None
        from_kernel: bool | None = None
        if parent_kind == P_ALIVE:
            host_ppid, from_kernel = ppid, bool(flags & E_PARENT_KTHREAD)
        elif parent_kind in (P_PARENT_OF, P_PREEXISTING):
            subject = ppid if parent_kind == P_PARENT_OF else host_pid
            k = self._trusted(subject, boot_ns)
            if k is not None and k.ppid is not None:
                host_ppid, from_kernel = k.ppid, k.ppid_kthread

        # Start time
        start = self._start_from_bounds(start_lo, start_hi) if flags & E_START_KNOWN else None
        if snap is not None and snap.start_ticks is not None:
            start = snap.start_ticks
        if start is None and parent_kind == P_PREEXISTING:
            k = self._trusted(host_pid, boot_ns)
            if k is not None:
                start = k.start_ticks

        # Namespaced ids
        pid = tid = vppid = pid_ns = None
        if in_host_ns:
            pid = tid = host_pid
            vppid = host_ppid
            pid_ns = self._self_ns.st_ino
        elif snap is not None and snap.nspid and snap.pid_ns is not None:
            pid = tid = snap.nspid[-1]
            pid_ns = snap.pid_ns
            vppid = self._ns_ppid(host_ppid, ppid_life, parent_kind, len(snap.nspid) - 1, snap.pid_ns)

        # The executable and what hangs on it
        exe_fields = None
        if snap is not None and snap.exe is not None and snap.exe_st is not None:
            st = snap.exe_st
            exe_fields = (text(snap.exe), st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mode)
        exec_id = ""
        if exe_fields is not None and start is not None:
            exec_id = ident.exec_id(host_pid, start, exe_fields[1], exe_fields[2])
            self._images[(host_pid, boot_ns)] = exec_id
            if len(self._images) > _IMAGES_MAX:
                del self._images[next(iter(self._images))]
        parent_exec_id = ""
        if flags & E_IMAGE_KNOWN:
            parent_exec_id = self._images.get((image_ppid, parent_image), "")
        else:
            image_ppid = 0

        interp_fields = None
        if snap is not None:
            if snap.interp_static:
                interp_fields = ("", 0, 0, 0)
            elif snap.interp is not None:
                ipath, ist = snap.interp
                interp_fields = (text(ipath), ist.st_dev, ist.st_ino, ist.st_ctime_ns)

        # argv, env, interp
        argv, argc, argv_cut, interp = self._argv(args, prep, snap, cmdpath_raw, is_script, missing)
        env, envc, env_cut = self._env(args, snap, missing)
        if prep is not None and prep.cut:
            path_truncated.append("interp")

        # cgroup
        cgroup_path = self.cgroups.path(cgroup_id)

        stdin = snap.stdin if snap is not None else None
        hostname = None
        if snap is not None and snap.uts_ns is not None and snap.uts_ns == self._self_uts:
            hostname = self.hostname

        def have(name: str, value: object, placeholder: object) -> object:
            if value is None:
                missing.add(name)
                return placeholder
            return value

        prev_comm = prep.comm if prep is not None else args.comm if args is not None else None
        euid = snap.euid if snap is not None else None
        egid = snap.egid if snap is not None else None
        if start is None:
            missing.update(("start_ticks", "exec_id"))
        if exe_fields is None:
            missing.update(("pathname", "dev", "inode", "ctime", "inode_mode", "exec_id"))
            exe_fields = ("", 0, 0, 0, 0)
        if interp_fields is None:
            missing.update(("interpreter_pathname", "interpreter_dev", "interpreter_inode", "interpreter_ctime"))
            interp_fields = ("", 0, 0, 0)
        if not parent_exec_id:
            missing.add("parent_exec_id")
        if not image_ppid:
            missing.add("image_ppid")
        if cgroup_path is None:
            missing.update(("cgroup_path", "container_id"))
        if stdin is None:
            missing.update(("stdin_type", "stdin_path"))
            stdin = (b"", 0)
        missing.add("process_start_time")  # /proc has clock ticks, the kernel's nanoseconds are out of reach

        ev = ExecEvent(
            timestamp=ident.boot_ns_to_epoch_ns(boot_ns),
            pid=have("pid", pid, 0),
            tid=have("tid", tid, 0),
            ppid=have("ppid", vppid, 0),
            host_pid=host_pid,
            host_tid=host_tid,
            host_ppid=have("host_ppid", host_ppid, 0),
            image_ppid=image_ppid,
            process_start_time=0,
            start_ticks=start or 0,
            exec_id=exec_id,
            parent_exec_id=parent_exec_id,
            uid=uid,
            gid=gid,
            euid=have("euid", euid, 0),
            egid=have("egid", egid, 0),
            comm=text(comm.split(b"\0", 1)[0]),
            prev_comm=have("prev_comm", None if prev_comm is None else text(prev_comm.split(b"\0", 1)[0]), ""),
            pwd=have("pwd", None if snap is None or snap.cwd is None else text(snap.cwd), ""),
            mount_ns=have("mount_ns", snap.mnt_ns if snap is not None else None, 0),
            pid_ns=have("pid_ns", pid_ns, 0),
            cgroup_id=cgroup_id,
            cgroup_path=cgroup_path or "",
            container_id=container_id(cgroup_path) if cgroup_path is not None else None,
            hostname=have("hostname", hostname, ""),
            cmdpath=cmdpath,
            pathname=exe_fields[0],
            dev=exe_fields[1],
            inode=exe_fields[2],
            ctime=exe_fields[3],
            inode_mode=exe_fields[4],
            interpreter_pathname=interp_fields[0],
            interpreter_dev=interp_fields[1],
            interpreter_inode=interp_fields[2],
            interpreter_ctime=interp_fields[3],
            argv=argv,
            interp=have("interp", interp, ""),
            stdin_type=stdin[1],
            stdin_path=text(stdin[0]),
            invoked_from_kernel=have("invoked_from_kernel", from_kernel, False),
            env=env,
            argv_truncated=argv_cut,
            env_truncated=env_cut,
            argc=have("argc", argc, 0),
            envc=have("envc", envc, 0),
            path_truncated=path_truncated,
        )
        ev.unavailable = tuple(name for name in _FIELD_ORDER if name in missing)
        self._learn(host_pid, host_ppid, bool(from_kernel), start)
        return ev

    def _ns_ppid(self, host_ppid: int | None, ppid_life: int, parent_kind: int, level: int,
                 pid_ns: int) -> int | None:
        """ppid in the process's own pid namespace (level > 0), as CO-RE's
        pid_at_level: the parent's pid at that level, 0 if not visible."""
        if host_ppid is None or parent_kind != P_ALIVE:
            return None
        ids = procfs.status_ids(host_ppid)
        try:
            parent_ns = os.stat(f"/proc/{host_ppid}/ns/pid").st_ino
        except OSError:
            return None
        nspid = None if ids is None else ids.nspid
        token = self._image_token(host_ppid)
        if nspid is None or token is None or token[0] != ppid_life:
            return None  # the parent is gone: not the one read
        parent_level = len(nspid) - 1
        if parent_level < level:
            return 0  # the parent is outside the process's namespace
        if parent_level == level and parent_ns == pid_ns:
            return nspid[level]
        return None

    def _argv(self, args: _Args | None, prep: _Prep | None, snap: procfs.Snapshot | None, cmdpath: bytes,
              is_script: bool | None, missing: set[str]) -> tuple[list[str], int | None, bool, str | None]:
        """argv, argc, argv_truncated and interp, as the CO-RE backend reads
        them after the exec (for a script: after the kernel's #! rewrite)."""
        max_bytes = self.cfg.argv_max_bytes
        interp = text(prep.interp) if prep is not None else None
        cmdline = snap.cmdline if snap is not None and snap.cmdline_whole else None
        proc_argv = cmdline[:-1].split(b"\0") if cmdline else None

        def from_block(block: bytes) -> tuple[list[str], bool]:
            cut = len(block) > max_bytes
            return self.argv_blocks.get(block[:max_bytes], cut), cut

        def unavailable() -> tuple[list[str], int | None, bool, str | None]:
            missing.update(("argv", "argc", "argv_truncated"))
            return [], None, False, interp

        if args is None or args.flags & A_ARGV_UNREADABLE:
            # Not from a syscall (a kernel_execve: usermode helpers) or not
            # readable then: the process's own argv, if it could be read.
            if cmdline is None:
                return unavailable()
            argv, cut = from_block(cmdline)
            return argv, len(proc_argv or []), cut, interp
        passed = args.argv.split(b"\0")[:-1] if args.argv else []
        complete = not args.flags & (A_ARGV_CUT | A_ARGC_UNKNOWN)
        if args.argc == 0 and self.kernel_518:
            passed, complete_count = [b""], 1  # 5.18+: an empty argv becomes [""]
        else:
            complete_count = args.argc
        if is_script is None and proc_argv is not None and complete:
            # No sched_prepare_exec: tell from what the process got.
            if proc_argv == passed:
                is_script, interp = False, text(cmdpath)
            elif self._rewritten(proc_argv, passed, cmdpath):
                is_script, interp = True, text(proc_argv[0])
        if is_script is False:
            if proc_argv is not None and complete and proc_argv != passed:
                return unavailable()  # changed since, or by another thread during the call: unverified
            block = b"".join(a + b"\0" for a in passed)
            argv = self.argv_blocks.get(block, not complete)
            argc = None if args.flags & A_ARGC_UNKNOWN else complete_count
            return argv, argc, not complete, interp
        if is_script and proc_argv is not None and complete and self._rewritten(proc_argv, passed, cmdpath):
            argv, cut = from_block(cmdline or b"")
            return argv, len(proc_argv), cut, interp
        return unavailable()

    @staticmethod
    def _rewritten(proc_argv: list[bytes], passed: list[bytes], cmdpath: bytes) -> bool:
        """proc_argv is binfmt_script's rewrite of passed: interpreter (and
        its #! argument, nested interpreters), the script path, then the
        caller's argv[1:]."""
        tail = [cmdpath] + passed[1:]
        return len(proc_argv) > len(tail) and proc_argv[-len(tail):] == tail

    def _env(self, args: _Args | None, snap: procfs.Snapshot | None, missing: set[str]) -> tuple[list[str], int | None, bool]:
        max_bytes = self.cfg.env_max_bytes
        if args is not None and not args.flags & A_ENV_UNREADABLE:
            cut = bool(args.flags & (A_ENV_CUT | A_ENVC_UNKNOWN))
            envc = None if args.flags & A_ENVC_UNKNOWN else args.envc
            return self.env_blocks.get(args.env, cut), envc, cut
        if snap is not None and snap.environ is not None and snap.environ_whole:
            block = snap.environ
            cut = len(block) > max_bytes
            env = self.env_blocks.get(block[:max_bytes], cut)
            envc = block.count(b"\0") + (0 if not block or block.endswith(b"\0") else 1)
            return env, envc, cut
        missing.update(("env", "envc", "env_truncated"))
        return [], None, False


_FIELD_ORDER = [name for name in ExecEvent.__slots__ if name not in ("shared", "unavailable")]
