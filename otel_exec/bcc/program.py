"""The BCC program: bpf/otel_exec_bcc.c compiled for this kernel and this
configuration, loaded, attached, its filters filled, and its maps read.

BCC compiles the program at start with the OE_* #defines the configuration
gives (bounds, filters, the optional tracepoints this kernel has) and
attaches every TRACEPOINT_PROBE as it loads; otel_exec_bcc.h, which holds
what the program shares with user space (otel_exec/bcc/layout.py mirrors
it), ships next to it and is found on the include path.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from otel_exec.bcc import layout, toolchain
from otel_exec.config import Config
from otel_exec.errors import BccError, BpfError, BpfLoadError
from otel_exec.host.tracefs import ensure_tracefs
from otel_exec.model.layout import CGROUP_DEPTH_MAX

PROGRAM = "otel_exec_bcc.c"
MIN_KERNEL = (5, 8)  # BPF ring buffer, bpf_ktime_get_boot_ns
# Tests emulate older kernels by hiding optional tracepoints:
# OTEL_EXEC_BCC_DISABLE=sched_prepare_exec,group_dead
DISABLE_ENV = "OTEL_EXEC_BCC_DISABLE"
REQUIRED_TRACEPOINTS = ("sched/sched_process_exec", "sched/sched_process_fork", "sched/sched_process_exit",
                        "task/task_newtask")
TAIL_PROGRAMS = (b"oe_copy", b"oe_count")  # the `tails` slots, in order: OE_TAIL_COPY, OE_TAIL_COUNT


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


class BccProgram:
    """The program loaded and attached, its filters filled; it reports
    nothing until start()."""

    def __init__(self, cfg: Config) -> None:
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
        disabled = {x.strip() for x in os.environ.get(DISABLE_ENV, "").split(",") if x.strip()}
        self.features = tracepoint_features(tracefs, disabled)
        for required in REQUIRED_TRACEPOINTS:
            if not (Path(tracefs) / "events" / required).is_dir():
                raise BccError(f"the BCC backend needs the tracepoint {required.replace('/', ':')}, "
                               f"which this kernel lacks")
        self.pid_ns = os.stat("/proc/self/ns/pid")
        self.bpf = self._load(bcc)
        try:
            self._procs = self.bpf["procs"]
            self._counters = self.bpf["counters"]
            self._fill_filters()
        except BaseException:
            self.bpf.cleanup()
            raise

    def _defines(self) -> dict[str, int]:
        cfg = self.cfg
        ns = self.pid_ns
        defines = {
            "OE_SELF_TGID": os.getpid(),
            # env is read even with --env-capture none: TRACEPARENT lives there.
            "OE_ARGV_MAX": cfg.argv_max_bytes,
            "OE_ENV_MAX": cfg.env_max_bytes,
            "OE_RINGBUF_PAGES": max(cfg.ring_bytes("bcc") // os.sysconf("SC_PAGE_SIZE"), 1),
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

    def _load(self, bcc):  # -> bcc.BPF
        path = program_path()
        source = "".join(f"#define {k} {v}\n" for k, v in self._defines().items()) + path.read_text()
        t0 = time.monotonic()
        with _StderrCapture() as captured:
            try:
                # otel_exec_bcc.h lies next to the program, in bpf/ or _bpf/.
                b = bcc.BPF(text=source.encode(), cflags=[f"-I{path.parent}"])
            except Exception as e:
                raise BpfLoadError(f"BCC could not compile or load {path.name}: {e}", captured.tail()) from None
            try:
                for index, name in enumerate(TAIL_PROGRAMS):
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
        for group in self.cfg.cgroups():
            cgroup_ids[ctypes.c_uint64(group.id)] = ctypes.c_uint8(1)

    def start(self) -> None:
        """Report from now on: the filters and tail calls are in place."""
        self.bpf["control"][ctypes.c_int(0)] = ctypes.c_uint64(1)

    def open_ring(self, on_record: Callable[[object, int, int], int]) -> int:
        """consume() hands the ring's records to on_record; returns the
        ring's map fd, readable while it holds records (for a wait of one's own)."""
        events = self.bpf["events"]
        events.open_ring_buffer(on_record)
        return int(events.map_fd)

    def consume(self) -> None:
        self.bpf.ring_buffer_consume()

    def image_token(self, pid: int) -> tuple[int, int] | None:
        """(life, image token) of the kernel's entry for pid, if any."""
        try:
            v = self._procs[self._procs.Key(pid)]
        except KeyError:
            return None
        return v.life, v.img_token

    def counter(self, index: int) -> int:
        """One counter of enum oe_counter, summed over CPUs."""
        counters = self._counters
        return int(counters.sum(counters.Key(index)).value)

    def counters(self) -> dict[str, int]:
        return {name: self.counter(i) for i, name in enumerate(layout.COUNTER_NAMES)}

    def detach(self) -> None:
        for tp in list(self.bpf.tracepoint_fds):
            self.bpf.detach_tracepoint(tp)

    def close(self) -> None:
        self.bpf.cleanup()
