"""Raw ring-buffer records -> typed events (otel_exec.model.events).

Pure functions of the record bytes and the host identity: no /proc, no
policy (redaction and sampling come next, in otel_exec.policy). A record
that is short or inconsistent raises DecodeError; it never reads past the
record it was given.
"""
from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from types import ModuleType
from typing import Any

from otel_exec.core.ringbuf import NATIVE
from otel_exec.model import layout
from otel_exec.host.cgroups import container_id
from otel_exec.model.blocks import BlockCache, BoundedCache, split_block, text
from otel_exec.model.events import (SHARED_FIELDS, Event, ExecEvent, ExitEvent, SharedExec, UnreportedExecEvent,
                                    exec_event_from_shared)
from otel_exec.host.identity import HostIdentity, kernel_dev_to_user

PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
ANON_INODE_FS_MAGIC = 0x09041934

# Any of the flags path_truncated names: most records have none.
_ANY_PATH_CUT = layout.F_CMDPATH_TRUNCATED | layout.F_INTERP_TRUNCATED | sum(
    layout.PF_TRUNCATED << (layout.F_PATH_SHIFT + i * layout.F_PATH_BITS) for i in range(len(layout.PATH_FIELDS)))
_DEV = SHARED_FIELDS.index("dev")
_INODE = SHARED_FIELDS.index("inode")


log = logging.getLogger(__name__)


class DecodeError(ValueError):
    """The record is malformed: its size fields disagree with its bytes."""


def native_for_layout(native: ModuleType | None) -> ModuleType | None:
    """`native` if the record layout compiled into it is layout.py's, and
    the event fields it sets are ExecEvent's and ExitEvent's."""
    if native is None:
        return None
    offsets = {"EXEC_MEMBERS": layout.member_offsets(layout.EXEC_MEMBERS),
               "EXIT_MEMBERS": layout.member_offsets(layout.EXIT_MEMBERS)}
    want = {"REC_EXEC": layout.REC_EXEC, "REC_EXIT": layout.REC_EXIT, "HEADER": layout.HEADER.size,
            "EXEC": layout.EXEC.size, "EXEC_SHARED_OFFSET": layout.EXEC_SHARED_OFFSET, "EXIT": layout.EXIT.size,
            "PF_TRUNCATED": layout.PF_TRUNCATED, "PF_DELETED": layout.PF_DELETED, "PF_DETACHED": layout.PF_DETACHED,
            "PIPEFS_MAGIC": PIPEFS_MAGIC, "SOCKFS_MAGIC": SOCKFS_MAGIC, "ANON_INODE_FS_MAGIC": ANON_INODE_FS_MAGIC,
            **{group: {name: offsets[group].get(name) for name in native.LAYOUT[group]} for group in offsets},
            "EXEC_EVENT_PER_EXEC": tuple(name for name in ExecEvent.__slots__ if name not in SHARED_FIELDS),
            "EXIT_EVENT": ExitEvent.__slots__}
    if native.LAYOUT != want:
        log.warning("the C decoder was built for another record layout or other event fields than "
                    "otel_exec/model/layout.py's and events.py's; the Python decoder runs (rebuild the extension)")
        return None
    return native


# The C decoder, or None: not built, not wanted, or built for another layout.
NATIVE_DECODER = native_for_layout(NATIVE)


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


def _cstr(raw: bytes) -> str:
    return text(raw.split(b"\0", 1)[0])


class Decoder:
    """`not_collected`: the fields the kernel was told not to read
    (--no-field), which get placeholders and are named in
    ExecEvent.unavailable. `native`: the C extension (NATIVE_DECODER, the
    default) whose decoder `native` and string helpers this one uses, or
    None for the pure-Python reference throughout."""

    def __init__(self, identity: HostIdentity, not_collected: tuple[str, ...] = (),
                 native: ModuleType | None = NATIVE_DECODER) -> None:
        self.identity = identity
        self._tick_ns = identity.ns_per_tick  # ticks_from_boot_ns without a call, per event
        self.not_collected = not_collected
        self._placeholders = [SHARED_FIELDS.index(name) for name in not_collected]
        self._join_path: Callable[..., str] = join_path if native is None else native.join_path
        self._cstr: Callable[[bytes], str] = _cstr if native is None else native.cstr
        split = split_block if native is None else native.split_block
        self.argv_blocks = BlockCache(split)
        self.env_blocks = BlockCache(split)
        # Paths, cgroups and parents repeat from exec to exec (one binary, one
        # cwd, one shell starting many commands): each is worked out once.
        self._paths = BoundedCache()
        self._cgroups = BoundedCache()
        self._parents = BoundedCache()
        self._shared = BoundedCache()
        # The C decoder of the common records, working from these caches.
        self.native: Any = None if native is None else native.Decoder(
            self, DecodeError, ExecEvent, SHARED_FIELDS, ExitEvent)

    def _path(self, raw: bytes, pflags: int) -> str:
        key = (raw, pflags)
        joined = self._paths.get(key)
        if joined is None:
            joined = self._join_path(raw, pflags)
            self._paths.remember(key, joined, 2 * len(raw))
        return joined

    def _cgroup(self, raw: bytes, pflags: int) -> tuple[str, str | None]:
        key = (raw, pflags)
        hit = self._cgroups.get(key)
        if hit is None:
            path = self._join_path(raw, pflags)
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
                         killed and bool(status & 0x80), self._cstr(comm))

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
            shared.repeats = self._shared.remember(key, shared, 3 * len(key))
        f = shared.fields
        ident = self.identity
        start_ticks = start // self._tick_ns
        to_epoch = ident.realtime_minus_boottime_ns
        return exec_event_from_shared(
            shared,
            timestamp=boot_ns + to_epoch, pid=pid, tid=tid, ppid=ppid, host_pid=host_pid, host_tid=host_tid,
            host_ppid=host_ppid, image_ppid=image_ppid, process_start_time=start + to_epoch, start_ticks=start_ticks,
            # exec_id: pid, start, and the file's dev and inode
            exec_id=ident.exec_id(host_pid, start_ticks, f[_DEV], f[_INODE]),
            # "" when the kernel could not see the parent's executable: the
            # agent takes the image from its process table.
            parent_exec_id=self._parent_exec_id(image_ppid, pstart, *shared.parent_exe) if shared.parent_exe else "",
            unavailable=self.not_collected, parent_start_ticks=pstart // self._tick_ns)

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
        pflags = [flags >> (shift + i * bits) & 7 for i in range(len(layout.PATH_FIELDS))]
        path = self._path
        cstr = self._cstr
        cgroup_path, container = self._cgroup(strs[layout.STR_CGROUP], pflags[4])
        stdin_pf = pflags[2]
        if not s_mode:
            stdin_path = ""
        elif stdin_pf & layout.PF_DETACHED:
            stdin_path = self._join_path(strs[layout.STR_STDIN], stdin_pf, stdin_magic, s_ino)
        else:
            stdin_path = path(strs[layout.STR_STDIN], stdin_pf)
        cut_paths: list[str] = []
        if flags & _ANY_PATH_CUT:
            cut_paths = [name for i, name in enumerate(layout.PATH_FIELDS) if pflags[i] & layout.PF_TRUNCATED]
            cut_paths += [name for name, bit in (("cmdpath", layout.F_CMDPATH_TRUNCATED),
                                                 ("interp", layout.F_INTERP_TRUNCATED)) if flags & bit]
        argv_cut = bool(flags & layout.F_ARGV_TRUNCATED)
        env_cut = bool(flags & layout.F_ENV_TRUNCATED)
        shared = SharedExec.of(None if flags & layout.F_PARENT_EXE_UNKNOWN else (p_dev, p_ino),
                               bool(flags & layout.F_SAMPLED), (
            "uid", uid, "gid", gid, "euid", euid, "egid", egid,
            "comm", cstr(comm),
            "prev_comm", cstr(prev_comm) if flags & layout.F_PREV_COMM_KNOWN else "",
            "pwd", path(strs[layout.STR_PWD], pflags[3]),
            "mount_ns", mount_ns, "pid_ns", pid_ns,
            "cgroup_id", cgroup_id, "cgroup_path", cgroup_path, "container_id", container,
            "hostname", cstr(hostname),
            "cmdpath", cstr(strs[layout.STR_CMDPATH]),
            "pathname", path(strs[layout.STR_PATHNAME], pflags[0]),
            "dev", kernel_dev_to_user(f_dev), "inode", f_ino, "ctime", f_ctime, "inode_mode", f_mode,
            "interpreter_pathname", path(strs[layout.STR_INTERPRETER], pflags[1]) if i_ino else "",
            "interpreter_dev", kernel_dev_to_user(i_dev) if i_ino else 0,
            "interpreter_inode", i_ino, "interpreter_ctime", i_ctime,
            "argv", self.argv_blocks.get(strs[layout.STR_ARGV], argv_cut),
            "interp", cstr(strs[layout.STR_INTERP]),
            "stdin_type", stat.S_IFMT(s_mode), "stdin_path", stdin_path,
            "invoked_from_kernel", bool(flags & layout.F_INVOKED_FROM_KERNEL),
            "env", self.env_blocks.get(strs[layout.STR_ENV], env_cut),
            "argv_truncated", argv_cut or bool(flags & layout.F_ARGV_UNREADABLE),
            "env_truncated", env_cut or bool(flags & layout.F_ENV_UNREADABLE),
            "argc", argc, "envc", envc, "path_truncated", cut_paths))
        if self._placeholders:
            # An empty path decodes as "/": a field not read must not look read.
            fields = list(shared.fields)
            for i in self._placeholders:
                fields[i] = type(fields[i])()
            shared.fields = tuple(fields)
        return shared
