"""Raw ring-buffer records -> typed events (otel_exec.events).

Pure functions of the record bytes and the host identity: no /proc, no
policy. A record that is short or inconsistent raises DecodeError; it never
reads past the record it was given.
"""
from __future__ import annotations

import os
import re
import stat

from . import layout
from .events import Event, ExecEvent, ExitEvent, ForkEvent
from .identity import HostIdentity, kernel_dev_to_user

PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
ANON_INODE_FS_MAGIC = 0x09041934

# Leaf-most cgroup component naming a container, for the cgroup layouts of
# docker (systemd and cgroupfs drivers), containerd/CRI, cri-o and podman.
_CONTAINER_CGROUP = re.compile(
    r"^(?:docker-|cri-containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$"
)


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


def container_id(cgroup_path: str) -> str | None:
    for part in reversed(cgroup_path.split("/")):
        if "conmon" in part:
            continue
        m = _CONTAINER_CGROUP.match(part)
        if m:
            return m.group(1)
    return None


def _cstr(raw: bytes) -> str:
    return text(raw.split(b"\0", 1)[0])


class Decoder:
    def __init__(self, identity: HostIdentity) -> None:
        self.identity = identity

    def decode(self, rec: memoryview | bytes) -> Event:
        if len(rec) < layout.HEADER.size:
            raise DecodeError(f"record of {len(rec)} bytes is shorter than its header")
        rtype, size, _ = layout.HEADER.unpack_from(rec)
        if size != len(rec) and not (size < len(rec) and len(rec) - size < 8):
            # The ring buffer pads records to 8 bytes; anything else is corrupt.
            raise DecodeError(f"record says {size} bytes, {len(rec)} were read")
        if rtype == layout.REC_EXEC:
            return self.exec(rec[:size])
        if rtype == layout.REC_FORK:
            return self.fork(rec[:size])
        if rtype == layout.REC_EXIT:
            return self.exit(rec[:size])
        raise DecodeError(f"unknown record type {rtype}")

    def _fixed(self, s: "layout.struct.Struct", rec: memoryview | bytes) -> tuple:
        if len(rec) < s.size:
            raise DecodeError(f"record of {len(rec)} bytes, its type needs {s.size}")
        return s.unpack_from(rec)

    def fork(self, rec: memoryview | bytes) -> ForkEvent:
        _, _, boot_ns, pstart, cstart, ppid, cpid, comm = self._fixed(layout.FORK, rec)
        ident = self.identity
        return ForkEvent(
            timestamp=ident.boot_ns_to_epoch_ns(boot_ns),
            parent_pid=ppid,
            child_pid=cpid,
            parent_start_ticks=ident.ticks_from_boot_ns(pstart),
            child_start_ticks=ident.ticks_from_boot_ns(cstart),
            comm=_cstr(comm),
        )

    def exit(self, rec: memoryview | bytes) -> ExitEvent:
        _, _, boot_ns, start, pid, status, comm = self._fixed(layout.EXIT, rec)
        ident = self.identity
        killed = os.WIFSIGNALED(status)
        return ExitEvent(
            timestamp=ident.boot_ns_to_epoch_ns(boot_ns),
            pid=pid,
            start_ticks=ident.ticks_from_boot_ns(start),
            exit_code=None if killed else os.WEXITSTATUS(status),
            signal=os.WTERMSIG(status) if killed else None,
            core_dumped=killed and os.WCOREDUMP(status),
            comm=_cstr(comm),
        )

    def exec(self, rec: memoryview | bytes) -> ExecEvent:
        (_, size, boot_ns, start, pstart, cgroup_id,
         f_ino, f_ctime, f_dev, f_mode,
         i_ino, i_ctime, i_dev, _i_mode,
         s_ino, _s_ctime, _s_dev, s_mode,
         p_ino, _p_ctime, p_dev, _p_mode,
         stdin_magic, host_pid, host_tid, host_ppid, _old_tid,
         pid, tid, ppid, uid, gid, euid, egid, mount_ns, pid_ns, argc, envc, flags,
         *rest) = self._fixed(layout.EXEC, rec)
        nstr = len(layout.STR_NAMES)
        lens = rest[:nstr]
        comm, prev_comm, hostname, _ = rest[nstr:]

        data = bytes(rec[layout.EXEC.size:size])
        if sum(lens) != len(data):
            raise DecodeError(f"exec strings add up to {sum(lens)} bytes, record holds {len(data)}")
        strs: list[bytes] = []
        pos = 0
        for n in lens:
            strs.append(data[pos:pos + n])
            pos += n

        def pflags(idx: int) -> int:
            return (flags >> (layout.F_PATH_SHIFT + layout.F_PATH_BITS * idx)) & 0b111

        cut_paths = [name for i, name in enumerate(layout.PATH_FIELDS) if pflags(i) & layout.PF_TRUNCATED]
        ident = self.identity
        dev = kernel_dev_to_user(f_dev)
        start_ticks = ident.ticks_from_boot_ns(start)
        cgroup_path = join_path(strs[layout.STR_CGROUP], pflags(4))
        argv_cut = bool(flags & layout.F_ARGV_TRUNCATED)
        env_cut = bool(flags & layout.F_ENV_TRUNCATED)
        return ExecEvent(
            timestamp=ident.boot_ns_to_epoch_ns(boot_ns),
            pid=pid,
            tid=tid,
            ppid=ppid,
            host_pid=host_pid,
            host_tid=host_tid,
            host_ppid=host_ppid,
            uid=uid,
            gid=gid,
            euid=euid,
            egid=egid,
            comm=_cstr(comm),
            prev_comm=_cstr(prev_comm) if flags & layout.F_PREV_COMM_KNOWN else "",
            pwd=join_path(strs[layout.STR_PWD], pflags(3)),
            mount_ns=mount_ns,
            pid_ns=pid_ns,
            cgroup_id=cgroup_id,
            cgroup_path=cgroup_path,
            container_id=container_id(cgroup_path),
            hostname=_cstr(hostname),
            process_start_time=ident.boot_ns_to_epoch_ns(start),
            exec_id=ident.exec_id(host_pid, start_ticks, dev, f_ino),
            parent_exec_id=ident.exec_id(host_ppid, ident.ticks_from_boot_ns(pstart),
                                         kernel_dev_to_user(p_dev), p_ino),
            cmdpath=_cstr(strs[layout.STR_CMDPATH]),
            pathname=join_path(strs[layout.STR_PATHNAME], pflags(0)),
            dev=dev,
            inode=f_ino,
            ctime=f_ctime,
            inode_mode=f_mode,
            interpreter_pathname=(join_path(strs[layout.STR_INTERPRETER], pflags(1))
                                  if i_ino else ""),
            interpreter_dev=kernel_dev_to_user(i_dev) if i_ino else 0,
            interpreter_inode=i_ino,
            interpreter_ctime=i_ctime,
            argv=split_block(strs[layout.STR_ARGV], argv_cut),
            interp=_cstr(strs[layout.STR_INTERP]),
            stdin_type=stat.S_IFMT(s_mode),
            stdin_path=(join_path(strs[layout.STR_STDIN], pflags(2), stdin_magic, s_ino)
                        if s_mode else ""),
            invoked_from_kernel=bool(flags & layout.F_INVOKED_FROM_KERNEL),
            env=split_block(strs[layout.STR_ENV], env_cut),
            argv_truncated=argv_cut or bool(flags & layout.F_ARGV_UNREADABLE),
            env_truncated=env_cut or bool(flags & layout.F_ENV_UNREADABLE),
            argc=argc,
            envc=envc,
            path_truncated=cut_paths,
            start_ticks=start_ticks,
        )
