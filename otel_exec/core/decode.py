"""Raw ring-buffer records -> typed events (otel_exec.model.events).

Pure functions of the record bytes and the host identity: no /proc, no
policy. A record that is short or inconsistent raises DecodeError; it never
reads past the record it was given.
"""
from __future__ import annotations

import re
import stat
from typing import Callable

from otel_exec.model import layout
from otel_exec.model.events import SHARED_FIELDS, Event, ExecEvent, ExitEvent, SharedExec, UnreportedExecEvent
from otel_exec.host.identity import HostIdentity, kernel_dev_to_user

PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
ANON_INODE_FS_MAGIC = 0x09041934

# Leaf-most cgroup component naming a container, for the cgroup layouts of
# docker (systemd and cgroupfs drivers), containerd/CRI, cri-o and podman.
_CONTAINER_CGROUP = re.compile(
    r"^(?:docker-|cri-containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$"
)


_DEV = SHARED_FIELDS.index("dev")
_INODE = SHARED_FIELDS.index("inode")


class DecodeError(ValueError):
    """The record is malformed: its size fields disagree with its bytes."""


def text(raw: bytes) -> str:
    """Kernel bytes as str; invalid UTF-8 bytes become \\xNN escapes."""
    return raw.decode("utf-8", "backslashreplace")


def split_block(block: bytes, truncated: bool) -> list[str]:
    """argv/env block -> elements. A block cut by the bound loses its partial
    last element rather than reporting it as if whole."""
    if not block:
        return []
    if block.endswith(b"\0"):
        return [text(e) for e in block[:-1].split(b"\0")]
    parts = block.split(b"\0")
    if truncated:
        parts.pop()
    return [text(e) for e in parts]


def join_path(leaf_first: bytes, pflags: int, fs_magic: int = 0, inode: int = 0) -> str:
    """Leaf-first components from the kernel -> the string d_path() gives."""
    names = leaf_first.split(b"\0")[:-1]
    if pflags & layout.PF_DETACHED:
        # Pseudo files: the d_dname() formats of pipefs, sockfs, anon_inodefs
        # and simple_dname() (memfd and other internal shmem files).
        name = text(names[0]) if names else ""
        if fs_magic == PIPEFS_MAGIC:
            return f"pipe:[{inode}]"
        if fs_magic == SOCKFS_MAGIC:
            return f"socket:[{inode}]"
        if fs_magic == ANON_INODE_FS_MAGIC:
            return f"anon_inode:{name}"
        return f"/{name} (deleted)"
    path = "/" + "/".join(text(n) for n in reversed(names))
    if pflags & layout.PF_TRUNCATED:
        path = "..." + path
    if pflags & layout.PF_DELETED:
        path += " (deleted)"
    return path


class Strings(list[str]):
    """A decoded argv or env list. Identical blocks (a storm of one command,
    the shared environment of a build) decode to one shared, read-only
    instance. `trace_context`: the W3C context of an env as the process had
    it, set before redaction (agent) or cached by span lineage."""

    __slots__ = ("trace_context",)


class BoundedCache(dict):  # type: ignore[type-arg]
    """A memo that empties itself once it holds max_entries entries or
    max_bytes of what remember() was told they weigh: emptying costs one
    re-decode per value still in use, and bounds memory whatever the input
    (argv and env blocks reach 128 KiB each)."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 2 << 20) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0

    def remember(self, key: object, value: object, weight: int = 0) -> None:
        if len(self) >= self.max_entries or self.bytes + weight > self.max_bytes:
            self.clear()
            self.bytes = 0
        self[key] = value
        self.bytes += weight


class BlockCache:
    """Raw argv/env block -> its (transformed, e.g. redacted) element list."""

    def __init__(self, transform: Callable[[list[str]], list[str]] | None) -> None:
        self.transform = transform
        self._cache = BoundedCache()

    def get(self, raw: bytes, truncated: bool) -> Strings:
        key = (raw, truncated)
        hit: Strings | None = self._cache.get(key)
        if hit is None:
            items = split_block(raw, truncated)
            result = self.transform(items) if self.transform else items
            # A transform may return Strings of its own, carrying what it
            # read before redacting (the trace context).
            hit = result if isinstance(result, Strings) else Strings(result)
            self._cache.remember(key, hit, 2 * len(raw))  # the raw key and the decoded strings
        return hit


def container_id(cgroup_path: str) -> str | None:
    for part in reversed(cgroup_path.split("/")):
        m = _CONTAINER_CGROUP.match(part)
        if m:
            return m.group(1)
    return None


def _cstr(raw: bytes) -> str:
    return text(raw.split(b"\0", 1)[0])


class Decoder:
    """`argv_transform`/`env_transform` (the redaction policy) run once per
    distinct block, not once per event. `not_collected`: the fields the
    kernel was told not to read (--no-field), which get placeholders and are
    named in ExecEvent.unavailable; `sample_rate`: --sample-rate."""

    def __init__(self, identity: HostIdentity, argv_transform: Callable[[list[str]], list[str]] | None = None,
                 env_transform: Callable[[list[str]], list[str]] | None = None,
                 not_collected: tuple[str, ...] = (), sample_rate: int = 1) -> None:
        self.identity = identity
        self._tick_ns = identity.ns_per_tick  # ticks_from_boot_ns without a call, per event
        self.not_collected = not_collected
        self._placeholders = [SHARED_FIELDS.index(name) for name in not_collected]
        self.sample_rate = sample_rate
        self.argv_blocks = BlockCache(argv_transform)
        self.env_blocks = BlockCache(env_transform)
        # Paths, cgroups and parents repeat from exec to exec (one binary, one
        # cwd, one shell starting many commands): each is worked out once.
        self._paths = BoundedCache()
        self._cgroups = BoundedCache()
        self._parents = BoundedCache()
        self._shared = BoundedCache()

    def _path(self, raw: bytes, pflags: int) -> str:
        key = (raw, pflags)
        joined = self._paths.get(key)
        if joined is None:
            joined = join_path(raw, pflags)
            self._paths.remember(key, joined, 2 * len(raw))
        return joined

    def _cgroup(self, raw: bytes, pflags: int) -> tuple[str, str | None]:
        key = (raw, pflags)
        hit = self._cgroups.get(key)
        if hit is None:
            path = join_path(raw, pflags)
            hit = (path, container_id(path))
            self._cgroups.remember(key, hit, 2 * len(raw))
        return hit

    def _parent_exec_id(self, pid: int, start_boot_ns: int, kdev: int, inode: int) -> str:
        key = (pid, start_boot_ns, kdev, inode)
        hit = self._parents.get(key)
        if hit is None:
            ident = self.identity
            hit = ident.exec_id(pid, ident.ticks_from_boot_ns(start_boot_ns), kernel_dev_to_user(kdev), inode)
            self._parents.remember(key, hit)
        return hit

    def decode(self, rec: memoryview | bytes) -> Event:
        if len(rec) < layout.HEADER.size:
            raise DecodeError(f"record of {len(rec)} bytes is shorter than its header")
        rtype, size, _ = layout.HEADER.unpack_from(rec)
        if size != len(rec) and not (size < len(rec) and len(rec) - size < 8):
            # The ring buffer pads records to 8 bytes; anything else is corrupt.
            raise DecodeError(f"record says {size} bytes, {len(rec)} were read")
        if rtype == layout.REC_EXEC:
            return self.exec(rec[:size])
        if rtype == layout.REC_EXIT:
            return self.exit(rec[:size])
        if rtype == layout.REC_UNREPORTED_EXEC:
            _, _, boot_ns, start, pid, _ = self._fixed(layout.UNREPORTED_EXEC, rec)
            ident = self.identity
            return UnreportedExecEvent(ident.boot_ns_to_epoch_ns(boot_ns), pid, ident.ticks_from_boot_ns(start))
        raise DecodeError(f"unknown record type {rtype}")

    def _fixed(self, s: "layout.struct.Struct", rec: memoryview | bytes) -> tuple:
        if len(rec) < s.size:
            raise DecodeError(f"record of {len(rec)} bytes, its type needs {s.size}")
        return s.unpack_from(rec)

    def exit(self, rec: memoryview | bytes) -> ExitEvent:
        _, _, boot_ns, start, pid, status, comm = self._fixed(layout.EXIT, rec)
        ident = self.identity
        # A wait status, decoded inline (os.WIFSIGNALED & co. cost a call
        # each, on every exit): low 7 bits the signal, 0x80 a core dump,
        # else the exit code in bits 8-15.
        signo = status & 0x7F
        killed = signo != 0 and signo != 0x7F  # 0x7F: stopped, not an end
        return ExitEvent(boot_ns + ident.realtime_minus_boottime_ns, pid, start // self._tick_ns,
                         None if killed else (status >> 8) & 0xFF, signo if killed else None,
                         killed and bool(status & 0x80), _cstr(comm))

    def exec(self, rec: memoryview | bytes) -> ExecEvent:
        if len(rec) < layout.EXEC.size:
            raise DecodeError(f"exec record of {len(rec)} bytes, needs at least {layout.EXEC.size}")
        (_, size, boot_ns, start, pstart, host_pid, host_tid, host_ppid, _old_tid, image_ppid,
         pid, tid, ppid) = layout.EXEC_HEAD.unpack_from(rec)
        key = bytes(rec[layout.EXEC_SHARED_OFFSET:size])
        shared = self._shared.get(key)
        if shared is None:
            shared = self._decode_shared(key)
            # The raw key, and the attributes the exporter encodes onto it
            # (its argv and env strings are weighed by the block caches).
            self._shared.remember(key, shared, 3 * len(key))
        f = shared.fields
        ident = self.identity
        start_ticks = start // self._tick_ns
        to_epoch = ident.realtime_minus_boottime_ns
        return ExecEvent(
            boot_ns + to_epoch, pid, tid, ppid, host_pid, host_tid, host_ppid, image_ppid,
            start + to_epoch, start_ticks,
            # exec_id: pid, start, and the file's dev and inode
            ident.exec_id(host_pid, start_ticks, f[_DEV], f[_INODE]),
            # "" when the kernel could not see the parent's executable: the
            # agent takes the image from its process table.
            self._parent_exec_id(image_ppid, pstart, *shared.parent_exe) if shared.parent_exe else "",
            *f, shared, self.not_collected, pstart // self._tick_ns)

    def _decode_shared(self, raw: bytes) -> SharedExec:
        """The shared part of an exec record: everything after the
        per-process fields, strings included."""
        (cgroup_id,
         f_ino, f_ctime, f_dev, f_mode,
         i_ino, i_ctime, i_dev, _i_mode,
         s_ino, _s_ctime, _s_dev, s_mode,
         p_ino, _p_ctime, p_dev, _p_mode,
         stdin_magic, uid, gid, euid, egid, mount_ns, pid_ns, argc, envc, flags,
         *rest) = layout.EXEC_SHARED.unpack_from(raw)
        nstr = len(layout.STR_NAMES)
        lens = rest[:nstr]
        comm, prev_comm, hostname, _ = rest[nstr:]
        pos = layout.EXEC_SHARED.size
        if pos + sum(lens) != len(raw):
            raise DecodeError(f"exec strings add up to {sum(lens)} bytes, record holds {len(raw) - pos}")
        strs: list[bytes] = []
        for n in lens:
            strs.append(raw[pos:pos + n])
            pos += n

        shift, bits = layout.F_PATH_SHIFT, layout.F_PATH_BITS

        def pflags(i: int) -> int:
            return flags >> (shift + i * bits) & 7

        path = self._path
        cgroup_path, container = self._cgroup(strs[layout.STR_CGROUP], pflags(4))
        stdin_pf = pflags(2)
        if not s_mode:
            stdin_path = ""
        elif stdin_pf & layout.PF_DETACHED:
            stdin_path = join_path(strs[layout.STR_STDIN], stdin_pf, stdin_magic, s_ino)
        else:
            stdin_path = path(strs[layout.STR_STDIN], stdin_pf)
        cut_paths = [name for i, name in enumerate(layout.PATH_FIELDS) if pflags(i) & layout.PF_TRUNCATED]
        cut_paths += [name for name, bit in (("cmdpath", layout.F_CMDPATH_TRUNCATED),
                                             ("interp", layout.F_INTERP_TRUNCATED)) if flags & bit]
        argv_cut = bool(flags & layout.F_ARGV_TRUNCATED)
        env_cut = bool(flags & layout.F_ENV_TRUNCATED)
        shared = SharedExec((
            uid, gid, euid, egid,
            _cstr(comm),
            _cstr(prev_comm) if flags & layout.F_PREV_COMM_KNOWN else "",
            path(strs[layout.STR_PWD], pflags(3)),
            mount_ns, pid_ns, cgroup_id, cgroup_path, container,
            _cstr(hostname),
            _cstr(strs[layout.STR_CMDPATH]),
            path(strs[layout.STR_PATHNAME], pflags(0)),
            kernel_dev_to_user(f_dev), f_ino, f_ctime, f_mode,
            path(strs[layout.STR_INTERPRETER], pflags(1)) if i_ino else "",
            kernel_dev_to_user(i_dev) if i_ino else 0, i_ino, i_ctime,
            self.argv_blocks.get(strs[layout.STR_ARGV], argv_cut),
            _cstr(strs[layout.STR_INTERP]),
            stat.S_IFMT(s_mode), stdin_path,
            bool(flags & layout.F_INVOKED_FROM_KERNEL),
            self.env_blocks.get(strs[layout.STR_ENV], env_cut),
            argv_cut or bool(flags & layout.F_ARGV_UNREADABLE),
            env_cut or bool(flags & layout.F_ENV_UNREADABLE),
            argc, envc, cut_paths,
            self.sample_rate if flags & layout.F_SAMPLED else 1 if self.sample_rate > 1 else None,
        ), None if flags & layout.F_PARENT_EXE_UNKNOWN else (p_dev, p_ino))
        if self._placeholders:
            # An empty path decodes as "/": a field not read must not look read.
            fields = list(shared.fields)
            for i in self._placeholders:
                fields[i] = type(fields[i])()
            shared.fields = tuple(fields)
        return shared
