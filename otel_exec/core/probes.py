"""Loads and attaches the CO-RE object; owns the kernel-side maps.

Preflight checks turn the usual failures (not root, no BTF, no bpf()) into
one-line errors with distinct exit codes before libbpf is asked anything.
"""
from __future__ import annotations

import mmap
import operator
import os
import struct
from functools import reduce
from pathlib import Path
from typing import BinaryIO, TypeVar

from otel_exec.host import privileges, procfs

from otel_exec.model import layout
from otel_exec.config import Config
from otel_exec.errors import NoBtfError
from otel_exec.core.libbpf import BpfObject
from otel_exec.core.ringbuf import NATIVE

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
# sched_prepare_exec (6.10+) is the only place the comm before exec is seen.
OPTIONAL_PROGRAMS = {"handle_prepare_exec": b"btf_trace_sched_prepare_exec"}
# The exec program's two builds: handle_exec reads the objects its path walks
# pass with plain loads, through the bpf_rdonly_cast kfunc (6.2+), and a kernel
# without it refuses the program; handle_exec_probed, with probe reads, runs
# there. Exactly one of them is loaded.
DIRECT_READS_KFUNC = b"bpf_rdonly_cast"
T = TypeVar("T")


def object_path() -> Path:
    # Beside the package's modules (never zipped: libbpf opens it by path);
    # importlib.resources would cost the start-up its import and zipfile's.
    path = Path(__file__).parent.parent / "_bpf" / "otel_exec.bpf.o"
    if not path.exists():
        from otel_exec.errors import BpfError

        raise BpfError(f"{path} is missing: build it with `make -C bpf` or reinstall the package")
    return path


# What earlier reads found, by file (its identity: the kernel's BTF does
# not change while the agent runs) and name: `run`'s preflight and the
# loader ask about the same file, and each read is several MB.
_btf_names_seen: dict[tuple[Path, int, int, int], dict[bytes, bool]] = {}


def btf_names_present(names: set[bytes], btf: Path = VMLINUX_BTF) -> set[bytes]:
    """Which of `names` are strings of the kernel's BTF. Mapped, or read in
    chunks: the file is several MB, and libbpf parses it again while
    loading, so reading it whole here raised the agent's peak RSS by as
    much."""
    try:
        st = btf.stat()
        seen = _btf_names_seen.setdefault((btf, st.st_ino, st.st_size, st.st_mtime_ns), {})
        unknown = names - seen.keys()
        if unknown:
            found = _strings_in(btf, unknown)
            seen.update((name, name in found) for name in unknown)
    except OSError as e:
        raise NoBtfError(
            f"{btf} is not readable ({e.strerror}): this kernel lacks BTF "
            "(CONFIG_DEBUG_INFO_BTF=y); use a kernel with BTF"
        ) from None
    return {name for name in names if seen[name]}


# The part of the file read at a time when it cannot be mapped.
_BTF_CHUNK = 1 << 18


def _strings_in(path: Path, names: set[bytes]) -> set[bytes]:
    wanted = {b"\0" + n + b"\0" for n in names}
    with path.open("rb") as f:
        try:
            # Mapped (kernels that allow it: 6.16 and later), the kernel's BTF
            # is the kernel's own pages: searched in place, without reading a
            # copy, and outside the agent's RSS.
            with mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as mapped:
                found = {w for w in wanted if mapped.find(w) >= 0}
        except (OSError, ValueError):  # not mappable (ValueError: a file of no size, a pipe)
            found = _read_strings_in(f, wanted)
    return {w[1:-1] for w in found}


def _read_strings_in(f: BinaryIO, wanted: set[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    overlap = max(map(len, wanted), default=0)
    tail = b""
    while chunk := f.read(_BTF_CHUNK):
        window = tail + chunk
        found |= {w for w in wanted if w in window}
        tail = window[-overlap:]
    return found


def _match_bits(*options: tuple[list[T], int]) -> dict[T, int]:
    """Each value given to some of the options -> the OR of their bits."""
    bits: dict[T, int] = {}
    for values, bit in options:
        for value in values:
            bits[value] = bits.get(value, 0) | bit
    return bits


def prefix_entries(include: list[str], keep: list[str]) -> dict[bytes, int]:
    """The path_prefixes entries: each prefix -> the bits of every prefix
    that is a prefix of it (itself included). The kernel's lookup returns
    only the longest match, which so answers for all the shorter ones."""
    own = _match_bits(([os.fsencode(p) for p in include], layout.MATCH_INCLUDE),
                      ([os.fsencode(p) for p in keep], layout.MATCH_KEEP))
    return {prefix: reduce(operator.or_, (bits for other, bits in own.items() if prefix.startswith(other)))
            for prefix in own}


class KernelProbes:
    """The loaded, attached programs and the maps user space talks to.

    Made, the object is opened and configured and its load (the verifier's
    work) goes on on a thread of its own (BpfObject.start_load) while the
    caller does something else; attach() then waits for it and attaches."""

    def __init__(self, cfg: Config) -> None:
        privileges.check_can_load_bpf()
        present = btf_names_present(set(OPTIONAL_PROGRAMS.values()) | {DIRECT_READS_KFUNC})
        self.ringbuf_bytes = cfg.ring_bytes("core", native_reader=NATIVE is not None)
        self._cfg = cfg
        self._counters: mmap.mmap | None = None  # once attached
        self.obj = BpfObject(str(object_path()))
        try:
            for prog, symbol in OPTIONAL_PROGRAMS.items():
                if symbol not in present:
                    self.obj.set_autoload(prog, False)
            self.obj.set_autoload("handle_exec_probed" if DIRECT_READS_KFUNC in present else "handle_exec", False)
            self.obj.set_rodata(self._config_bytes(cfg, self.ringbuf_bytes))
            self.obj.set_max_entries("events", self.ringbuf_bytes)
            self.obj.set_max_entries("scratch", self.obj.num_possible_cpus())
            self.obj.set_max_entries("counters", self.obj.num_possible_cpus() * len(layout.COUNTER_NAMES))
        except BaseException:
            self.obj.close()
            raise
        self.obj.start_load()

    def attach(self) -> None:
        """Wait for the load and attach; the object is closed when either
        fails."""
        try:
            self.obj.load()
            self._fill_filters(self._cfg)
            self.obj.attach_all()
            self.obj.forget_log()
        except BaseException:
            self.obj.close()
            raise
        self.ringbuf_fd = self.obj.map_fd("events")
        ncounters = self.obj.num_possible_cpus() * len(layout.COUNTER_NAMES)
        self._counters = mmap.mmap(self.obj.map_fd("counters"), -(-8 * ncounters // mmap.PAGESIZE) * mmap.PAGESIZE,
                                   mmap.MAP_SHARED, mmap.PROT_READ)
        self._ncounters = ncounters

    @staticmethod
    def _config_bytes(cfg: Config, ringbuf_bytes: int) -> bytes:
        skip = 0
        for group, bit in (("stdin", layout.SKIP_STDIN), ("interpreter", layout.SKIP_INTERPRETER),
                           ("paths", layout.SKIP_PATHS)):
            if group in cfg.no_field:
                skip |= bit
        return layout.CONFIG.pack(
            os.getpid(),
            0 if "argv" in cfg.no_field else cfg.argv_max_bytes,
            # env is read even with --env-capture none: TRACEPARENT lives there.
            0 if "env" in cfg.no_field else cfg.env_max_bytes,
            procfs.pid_ns(),  # the agent runs in the host pid namespace (hostPID)
            bool(cfg.comm),
            bool(cfg.exclude_comm),
            bool(cfg.uid),
            cfg.container_only,
            int(ringbuf_bytes * cfg.wakeup_fraction),
            bool(cfg.cgroup),
            bool(cfg.path_prefix),
            bool(cfg.keep_comm),
            bool(cfg.keep_uid),
            bool(cfg.keep_path_prefix),
            b"",
            cfg.sample_rate,
            skip,
        )

    def _fill_filters(self, cfg: Config) -> None:
        for comm, bits in _match_bits((cfg.comm, layout.MATCH_INCLUDE), (cfg.exclude_comm, layout.MATCH_EXCLUDE),
                                      (cfg.keep_comm, layout.MATCH_KEEP)).items():
            self.obj.map_update("comm_filter", comm.encode().ljust(layout.COMM_LEN, b"\0"), bytes([bits]))
        for uid, bits in _match_bits((cfg.uid, layout.MATCH_INCLUDE), (cfg.keep_uid, layout.MATCH_KEEP)).items():
            self.obj.map_update("uid_filter", uid.to_bytes(4, "little"), bytes([bits]))
        for group in cfg.cgroups():
            self.obj.map_update("cgroup_filter", group.id.to_bytes(8, "little"), b"\1")
        for prefix, bits in prefix_entries(cfg.path_prefix, cfg.keep_path_prefix).items():
            self.obj.map_update("path_prefixes", layout.PREFIX_KEY.pack(8 * len(prefix), prefix), bytes([bits]))

    def counters(self) -> dict[str, int]:
        """Summed over CPUs, read from the mapped map (no bpf() call)."""
        names = layout.COUNTER_NAMES
        assert self._counters is not None, "counters before attach()"
        values = struct.unpack_from(f"={self._ncounters}Q", self._counters)
        return {name: sum(values[i::len(names)]) for i, name in enumerate(names)}

    def detach(self) -> None:
        """Stop producing events; what is in the ring stays readable."""
        self.obj.detach_all()

    def close(self) -> None:
        """Also before attach(): a load begun is waited for and dropped."""
        if self._counters is not None:
            self._counters.close()
        self.obj.close()
