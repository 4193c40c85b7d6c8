"""Thin ctypes binding to the system libbpf (libbpf.so.1, 1.1 API).

Only what otel-exec needs: open an object, patch its ``.rodata`` config and
map sizes, load, attach, and access maps. libbpf's log is captured per
object instead of going to stderr, so a verifier rejection is reported as one
error carrying the useful end of the log. Its debug messages (a thousand and
more per load) are dropped unless ``OTEL_EXEC_LIBBPF_DEBUG=1``, which also
logs every libbpf message at its level as it is emitted (the debug ones with
OTEL_LOG_LEVEL=debug).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

from otel_exec.errors import BpfError, BpfLoadError

_C = TypeVar("_C", bound="Closing")

_LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
_LOG_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by libbpf_print_level
_LOG_TAIL_LINES = 20
# Bounds the debug chatter kept per object; the verifier log is one message.
_LOG_MAX_MESSAGES = 4096
# How long BpfObject.load() waits for start_load's thread to leave
# /proc/self/task once it has ended (it takes microseconds; a tracer that
# holds exited threads as zombies could hold it longer).
_THREAD_EXIT_S = 1.0

# int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, va_list).
# va_list is passed as a pointer on x86-64 (array type) and on aarch64 (a
# 32-byte struct goes by reference), so c_void_p carries it through intact.
_PrintFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

_vp = ctypes.c_void_p
_PROTOTYPES: dict[str, tuple[object, tuple[object, ...]]] = {
    "bpf_object__open_file": (_vp, (ctypes.c_char_p, _vp)),
    "bpf_object__load": (ctypes.c_int, (_vp,)),
    "bpf_object__close": (None, (_vp,)),
    "bpf_object__next_map": (_vp, (_vp, _vp)),
    "bpf_object__next_program": (_vp, (_vp, _vp)),
    "bpf_object__find_map_by_name": (_vp, (_vp, ctypes.c_char_p)),
    "bpf_object__find_program_by_name": (_vp, (_vp, ctypes.c_char_p)),
    "bpf_map__name": (ctypes.c_char_p, (_vp,)),
    "bpf_map__fd": (ctypes.c_int, (_vp,)),
    "bpf_map__max_entries": (ctypes.c_uint32, (_vp,)),
    "bpf_map__set_max_entries": (ctypes.c_int, (_vp, ctypes.c_uint32)),
    "bpf_map__key_size": (ctypes.c_uint32, (_vp,)),
    "bpf_map__value_size": (ctypes.c_uint32, (_vp,)),
    "bpf_map__initial_value": (_vp, (_vp, ctypes.POINTER(ctypes.c_size_t))),
    "bpf_map__lookup_elem": (
        ctypes.c_int, (_vp, _vp, ctypes.c_size_t, _vp, ctypes.c_size_t, ctypes.c_uint64)),
    "bpf_map__update_elem": (
        ctypes.c_int, (_vp, _vp, ctypes.c_size_t, _vp, ctypes.c_size_t, ctypes.c_uint64)),
    "bpf_program__name": (ctypes.c_char_p, (_vp,)),
    "bpf_program__autoload": (ctypes.c_bool, (_vp,)),
    "bpf_program__set_autoload": (ctypes.c_int, (_vp, ctypes.c_bool)),
    "bpf_program__attach": (_vp, (_vp,)),
    "bpf_link__destroy": (ctypes.c_int, (_vp,)),
    "libbpf_num_possible_cpus": (ctypes.c_int, ()),
    "libbpf_strerror": (ctypes.c_int, (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)),
    "libbpf_set_print": (_vp, (_PrintFn,)),
    "libbpf_major_version": (ctypes.c_uint32, ()),
    "libbpf_minor_version": (ctypes.c_uint32, ()),
}

# Each thread's messages go to the object whose libbpf call it is making.
_sink = threading.local()
_ECHO = os.environ.get("OTEL_EXEC_LIBBPF_DEBUG") == "1"
log = logging.getLogger(__name__)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)  # the libc this interpreter already runs on
    # vasprintf, not vsnprintf: a va_list can be consumed only once, and a
    # verifier log is megabytes, so there is no buffer size to guess and retry.
    libc.vasprintf.restype = ctypes.c_int
    libc.vasprintf.argtypes = (ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p)
    libc.free.restype = None
    libc.free.argtypes = (ctypes.c_void_p,)
    return libc


def _on_print(level: int, fmt: int | None, args: int | None) -> int:
    if level > _KEPT_LEVEL:
        return 0
    libc = _libc()
    buf = ctypes.c_void_p()
    n: int = libc.vasprintf(ctypes.byref(buf), fmt, args)
    if n < 0:
        return 0
    try:
        text = ctypes.string_at(buf, n).decode("utf-8", "backslashreplace")
    finally:
        libc.free(buf)
    kept = getattr(_sink, "log", None)
    if kept is not None:
        kept.append((level, text))
    if _ECHO:
        log.log(_LOG_LEVELS[min(max(level, 0), _LIBBPF_DEBUG)], "%s", text.rstrip("\n"))
    return n


_print_cb = _PrintFn(_on_print)  # libbpf keeps the raw pointer: must stay alive
# The highest libbpf_print_level kept: the debug messages only when echoed.
_KEPT_LEVEL = _LIBBPF_DEBUG if _ECHO else _LIBBPF_DEBUG - 1


def _print_fn() -> _PrintFn:
    """_on_print behind the C extension's level filter when it is built: the
    messages dropped then never enter the interpreter (a load runs on a
    thread of its own, BpfObject.start_load, and each call into Python
    would take the GIL from the main thread)."""
    from otel_exec.core.ringbuf import NATIVE

    # An extension built before the filter existed: _on_print filters alone.
    make_filter = getattr(NATIVE, "libbpf_print_filter", None)
    if make_filter is None:
        return _print_cb
    return _PrintFn(make_filter(ctypes.cast(_print_cb, ctypes.c_void_p).value, _KEPT_LEVEL))


# The package carries no libbpf: the system's is loaded (docs/packaging.md).
INSTALL_LIBBPF = ("install libbpf 1.1 or later: apt-get install libbpf1 (Debian, Ubuntu), "
                  "dnf install libbpf (Fedora, RHEL)")


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise BpfError(f"cannot load libbpf.so.1 ({exc}): {INSTALL_LIBBPF}") from exc
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    lib.libbpf_set_print(_print_fn())
    return lib


def version() -> str:
    """The loaded libbpf's version, e.g. '1.1'; raises BpfError without one."""
    lib = _lib()
    return f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"


def strerror(err: int) -> str:
    """Describe a positive errno or libbpf error code, e.g. 'Permission denied (EPERM)'."""
    buf = ctypes.create_string_buffer(256)
    _lib().libbpf_strerror(err, buf, len(buf))  # also knows libbpf's own 4000+ codes
    name = errno.errorcode.get(err)
    text = buf.value.decode(errors="replace")
    return f"{text} ({name})" if name else text


def num_possible_cpus() -> int:
    """Number of possible CPUs: the slot count of every per-CPU map value."""
    n: int = _lib().libbpf_num_possible_cpus()
    if n < 0:
        raise BpfError(f"cannot count possible CPUs: {strerror(-n)}")
    return n


class Closing:
    """`with x:` closes x at the end: the kernel objects (BPF object, ring
    buffer) hold file descriptors and mappings a test must not leak."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()  # type: ignore[attr-defined]


class BpfObject(Closing):
    """One BPF ELF object: open, configure, ``load()``, ``attach_all()``, use maps."""

    num_possible_cpus = staticmethod(num_possible_cpus)

    def __init__(self, path: str) -> None:
        self.path = path
        self._log: deque[tuple[int, str]] = deque(maxlen=_LOG_MAX_MESSAGES)
        self._links: list[int] = []
        self._load_attempted = False
        self._loading: threading.Thread | None = None  # start_load's, until load() has waited for it
        self._load_rc = 0
        self._obj: int | None = None
        with self._capture():
            obj = _lib().bpf_object__open_file(os.fsencode(path), None)
        if not obj:
            raise BpfError(f"cannot open BPF object {path}: {strerror(ctypes.get_errno())}")
        self._obj = obj

    @property
    def log(self) -> str:
        """Everything libbpf said about this object so far, debug level included."""
        return "".join(text for _, text in self._log)

    def set_rodata(self, data: bytes) -> None:
        """Write ``data`` (the packed config struct) at offset 0 of ``.rodata``.

        Only before ``load()``: libbpf then freezes the map and remaps this
        memory read-only, so a later write would crash the interpreter.
        """
        self._require_unloaded("set .rodata")
        rodata = self._rodata_map()
        size = ctypes.c_size_t()
        ptr = _lib().bpf_map__initial_value(rodata, ctypes.byref(size))
        if not ptr:
            raise BpfError(f"{self.path}: .rodata has no initial value to write")
        if len(data) > size.value:
            raise BpfError(
                f"{self.path}: config of {len(data)} bytes does not fit .rodata of {size.value}")
        # Not bpf_map__set_initial_value(): it insists on the full map size,
        # and .rodata may hold more than the config struct.
        ctypes.memmove(ptr, data, len(data))

    def set_max_entries(self, map_name: str, n: int) -> None:
        self._require_unloaded(f"resize map {map_name!r}")
        rc = _lib().bpf_map__set_max_entries(self._map(map_name), n)
        if rc < 0:
            raise BpfError(f"cannot set max_entries of map {map_name!r} to {n}: {strerror(-rc)}")

    def max_entries(self, map_name: str) -> int:
        """As libbpf will create the map (it rounds ring buffer sizes up to a valid one)."""
        n: int = _lib().bpf_map__max_entries(self._map(map_name))
        return n

    def set_autoload(self, prog_name: str, enabled: bool) -> None:
        self._require_unloaded(f"change autoload of {prog_name!r}")
        rc = _lib().bpf_program__set_autoload(self._prog(prog_name), enabled)
        if rc < 0:
            raise BpfError(f"cannot set autoload of program {prog_name!r}: {strerror(-rc)}")

    def program_names(self) -> list[str]:
        return [name for name, _ in self._programs()]

    def load(self) -> None:
        """Create maps and verify programs, or wait for start_load's thread
        to have done it; BpfLoadError carries the log tail."""
        if self._loading is None:
            self._start_load()
            self._load_now()
        else:
            self._wait_loaded()
        if self._load_rc < 0:
            raise BpfLoadError(f"cannot load BPF object {self.path}: {strerror(-self._load_rc)}",
                               self._log_tail())

    def start_load(self) -> None:
        """Begin load() on a thread of its own and return: the kernel's
        verifier, the largest part of an agent's start-up, needs neither
        the GIL nor the caller's thread, which goes on with the rest of the
        start meanwhile. load() waits for it and reports as it would have;
        so does close(). Nothing else may be asked of the object until then."""
        self._start_load()
        self._loading = threading.Thread(target=self._load_now, name="bpf-load")
        self._loading.start()

    def _start_load(self) -> None:
        self._require_unloaded("load")
        self._handle()
        # libbpf counts a failed load as loaded too: no second attempt, no patching.
        self._load_attempted = True

    def _load_now(self) -> None:
        with self._capture():
            self._load_rc = _lib().bpf_object__load(self._obj)

    def _wait_loaded(self) -> None:
        """Until start_load's thread is gone from the process: from
        /proc/self/task too, where the kernel lists it a moment after
        join() returns, and where the privilege drop's check that follows
        the load must find no thread that was not dropped
        (host.privileges.check_threads)."""
        thread, self._loading = self._loading, None
        if thread is None:
            return
        thread.join()
        task = f"/proc/self/task/{thread.native_id}"
        deadline = time.monotonic() + _THREAD_EXIT_S
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.001)

    def attach_all(self) -> None:
        """Attach every program whose autoload is on; links live until ``close()``."""
        if not self._load_attempted:
            raise BpfError(f"{self.path}: attach before load")
        lib = _lib()
        for name, prog in self._programs():
            if not lib.bpf_program__autoload(prog):
                continue
            with self._capture():
                link = lib.bpf_program__attach(prog)
            if not link:
                raise BpfError(
                    f"cannot attach BPF program {name!r}: {strerror(ctypes.get_errno())}")
            self._links.append(link)

    def map_fd(self, name: str) -> int:
        fd: int = _lib().bpf_map__fd(self._map(name))
        if fd < 0:
            raise BpfError(f"map {name!r} has no fd: object not loaded")
        return fd

    def map_update(self, name: str, key: bytes, value: bytes, flags: int = 0) -> None:
        """``flags``: BPF_ANY (0), BPF_NOEXIST (1), BPF_EXIST (2)."""
        bmap = self._loaded_map(name)
        rc = _lib().bpf_map__update_elem(bmap, key, len(key), value, len(value), flags)
        if rc < 0:
            raise BpfError(f"cannot update map {name!r}: {strerror(-rc)}{self._sizes(bmap)}")

    def map_lookup(self, name: str, key: bytes, value_size: int) -> bytes | None:
        """The value under ``key``, or None if there is none.

        For per-CPU maps ``value_size`` is the whole buffer: every possible
        CPU's value, each rounded up to 8 bytes.
        """
        bmap = self._loaded_map(name)
        value = ctypes.create_string_buffer(value_size)
        # bpf_map__lookup_elem rather than bpf_map_lookup_elem(fd): it checks
        # the sizes against the map first, so a short buffer is an error
        # instead of the kernel writing past it into the Python heap.
        rc = _lib().bpf_map__lookup_elem(bmap, key, len(key), value, value_size, 0)
        if rc == -errno.ENOENT:
            return None
        if rc < 0:
            raise BpfError(f"cannot look up map {name!r}: {strerror(-rc)}{self._sizes(bmap)}")
        return value.raw

    def percpu_array_sum(self, name: str, index: int, ncpus: int | None = None) -> int:
        """Sum over CPUs of slot ``index`` of a BPF_MAP_TYPE_PERCPU_ARRAY of u64."""
        n = num_possible_cpus() if ncpus is None else ncpus
        raw = self.map_lookup(name, index.to_bytes(4, sys.byteorder), 8 * n)
        if raw is None:
            raise BpfError(f"index {index} is out of range of map {name!r}")
        return sum(struct.unpack(f"={n}Q", raw))

    def detach_all(self) -> None:
        """Detach every program; maps stay readable until ``close()``."""
        lib = _lib()
        with self._capture():
            while self._links:
                lib.bpf_link__destroy(self._links.pop())

    def forget_log(self) -> None:
        """Drop what libbpf said so far (once loaded and attached, nothing
        reports it, and libbpf's debug messages are many)."""
        self._log.clear()

    def close(self) -> None:
        """Detach all programs and free the object (its maps go with their last fd)."""
        self._wait_loaded()
        self.detach_all()
        with self._capture():
            if self._obj is not None:
                _lib().bpf_object__close(self._obj)
                self._obj = None

    @contextmanager
    def _capture(self) -> Iterator[None]:
        previous = getattr(_sink, "log", None)
        _sink.log = self._log
        try:
            yield
        finally:
            _sink.log = previous

    def _log_tail(self) -> str:
        # Debug chatter would push the verifier's verdict out of the tail.
        text = "".join(t for level, t in self._log if level != _LIBBPF_DEBUG)
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])

    def _handle(self) -> int:
        if self._obj is None:
            raise BpfError(f"{self.path}: BPF object is closed")
        return self._obj

    def _require_unloaded(self, what: str) -> None:
        if self._load_attempted:
            raise BpfError(f"{self.path}: cannot {what} after load")

    def _programs(self) -> Iterator[tuple[str, int]]:
        lib = _lib()
        obj = self._handle()
        prog = lib.bpf_object__next_program(obj, None)
        while prog:
            yield lib.bpf_program__name(prog).decode(), prog
            prog = lib.bpf_object__next_program(obj, prog)

    def _prog(self, name: str) -> int:
        prog: int | None = _lib().bpf_object__find_program_by_name(self._handle(), name.encode())
        if not prog:
            raise BpfError(f"{self.path}: no BPF program named {name!r}")
        return prog

    def _map(self, name: str) -> int:
        bmap: int | None = _lib().bpf_object__find_map_by_name(self._handle(), name.encode())
        if not bmap:
            raise BpfError(f"{self.path}: no BPF map named {name!r}")
        return bmap

    def _loaded_map(self, name: str) -> int:
        # bpf_map__*_elem answer ENOENT for a map without fd, which would
        # read as "no such key".
        self.map_fd(name)
        return self._map(name)

    def _rodata_map(self) -> int:
        # libbpf names it "<object name prefix>.rodata"; the prefix varies.
        lib = _lib()
        obj = self._handle()
        bmap: int | None = lib.bpf_object__next_map(obj, None)
        while bmap:
            if lib.bpf_map__name(bmap).endswith(b".rodata"):
                return bmap
            bmap = lib.bpf_object__next_map(obj, bmap)
        raise BpfError(f"{self.path}: no .rodata map (the object has no const volatile data)")

    @staticmethod
    def _sizes(bmap: int) -> str:
        lib = _lib()
        return (f" (map key_size {lib.bpf_map__key_size(bmap)},"
                f" value_size {lib.bpf_map__value_size(bmap)})")
