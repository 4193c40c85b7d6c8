"""The BCC program's records joined into events.

One exec is up to three records from one thread: ARGS (argv and env as the
caller passed them), PREP (6.10+: the interpreter after the #! rewrite) and
EXEC (the exec succeeded). ARGS and PREP wait here, bounded, for the EXEC
that names them by the exec'ing thread id and their time stamp; DISCARD
drops an ARGS whose exec failed or was filtered out. EXIT becomes an
ExitEvent on its own.

An exec's event takes, besides the records:
- from /proc/PID, read when the EXEC record arrives and accepted only if
  the kernel map still holds this exec's image token afterwards (no later
  exec, no exit, so no pid reuse, in between): the executable (pathname,
  dev, inode, ctime, inode_mode), the ELF interpreter, stdin, pwd,
  euid/egid, namespaces, hostname, start time, the post-#! argv of
  scripts, and from those exec_id;
- from lineage.Lineage: the parent and start time of processes forked
  before the agent, and the parent image's exec_id;
- cgroup_path (and container_id) from cgroup_id (host/cgroups.CgroupPaths).
What cannot be verified is left empty and named in ExecEvent.unavailable.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

from otel_exec.bcc.layout import (A_ARGC_UNKNOWN, A_ARGV_CUT, A_ARGV_UNREADABLE, A_ENV_CUT, A_ENV_UNREADABLE,
                                  A_ENVC_UNKNOWN, ARGS, DISCARD, E_FILENAME_CUT, E_HOST_PID_NS, E_IMAGE_KNOWN,
                                  E_PARENT_KTHREAD, E_START_KNOWN, EXEC, EXIT, HDR, P_ALIVE, P_PARENT_OF,
                                  P_PREEXISTING, PREP, REC_ARGS, REC_DISCARD, REC_EXEC, REC_EXIT, REC_PREP,
                                  STR_MAX, X_START_KNOWN)
from otel_exec.bcc.lineage import Lineage
from otel_exec.bcc.program import kernel_version
from otel_exec.config import Config
from otel_exec.host.cgroups import container_id
from otel_exec.model.blocks import BlockCache, text
from otel_exec.host import procfs
from otel_exec.host.cgroups import CgroupPaths
from otel_exec.host.identity import HostIdentity
from otel_exec.model.events import Event, ExecEvent, ExitEvent
from otel_exec.model.layout import ARGS_MAX

ImageToken = Callable[[int], tuple[int, int] | None]

# Margin for comparing the kernel's task start time with the BPF clock
# reads around it (both CLOCK_BOOTTIME; the BPF helper is the NMI-safe
# accessor, which may lag the other by a little).
START_MARGIN_NS = 50_000
_PENDING_MAX = 4096
_PENDING_BYTES_MAX = 32 << 20


@dataclass(slots=True)
class _PendingArgs:
    boot_ns: int
    flags: int
    argc: int
    envc: int
    comm: bytes
    argv: bytes
    env: bytes


@dataclass(slots=True)
class _PendingPrep:
    boot_ns: int
    comm: bytes
    interp: bytes
    cut: bool


class RecordJoin:
    def __init__(self, cfg: Config, identity: HostIdentity, image_token: ImageToken, lineage: Lineage,
                 host_pid_ns: int) -> None:
        self.cfg = cfg
        self.identity = identity
        self.image_token = image_token  # the kernel's (life, image token) of a pid
        self.lineage = lineage
        self.host_pid_ns = host_pid_ns
        self.argv_blocks = BlockCache()
        self.env_blocks = BlockCache()
        self.proc_unverified = 0  # execs whose /proc fields could not be verified
        self.kernel_518 = kernel_version() >= (5, 18, 0)
        self._self_uts = os.stat("/proc/self/ns/uts").st_ino
        self.hostname = socket.gethostname()
        self.cgroups = CgroupPaths()
        self._pending_args: dict[int, _PendingArgs] = {}
        self._pending_bytes = 0
        self._pending_prep: dict[int, _PendingPrep] = {}

    def add(self, raw: bytes) -> Event | None:
        """The event a record completes, if any; ValueError if it is malformed."""
        rtype, rsize, _ = HDR.unpack_from(raw)
        if rsize > len(raw):
            raise ValueError(f"record says {rsize} bytes, {len(raw)} were read")
        if rtype == REC_EXEC:
            return self._exec(raw)
        if rtype == REC_ARGS:
            self._args(raw)
        elif rtype == REC_PREP:
            self._prep(raw)
        elif rtype == REC_EXIT:
            return self._exit(raw)
        elif rtype == REC_DISCARD:
            _, _, _, tid, _, args_ns = DISCARD.unpack_from(raw)
            args = self._pending_args.get(tid)
            if args is not None and args.boot_ns == args_ns:
                self._drop_args(tid)
        else:
            raise ValueError(f"unknown record type {rtype}")
        return None

    # --- records that wait for their EXEC ----------------------------------------

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
        args = _PendingArgs(boot_ns, flags, argc, envc, comm, raw[pos:pos + argv_len], raw[pos + argv_len:size])
        self._pending_args[tid] = args
        self._pending_bytes += argv_len + env_len
        while len(self._pending_args) > _PENDING_MAX or self._pending_bytes > _PENDING_BYTES_MAX:
            self._drop_args(next(iter(self._pending_args)))

    def _prep(self, raw: bytes) -> None:
        _, size, boot_ns, tid, interp_len, comm = PREP.unpack_from(raw)
        interp = raw[PREP.size:PREP.size + interp_len]
        if PREP.size + interp_len != size:
            raise ValueError(f"PREP of {size} bytes holds a {interp_len}-byte interp")
        self._pending_prep[tid] = _PendingPrep(boot_ns, comm, interp.split(b"\0", 1)[0], interp_len >= STR_MAX)
        if len(self._pending_prep) > _PENDING_MAX:
            del self._pending_prep[next(iter(self._pending_prep))]

    def _claim(self, old_tid: int, args_ns: int, prep_ns: int) -> tuple[_PendingArgs | None, _PendingPrep | None]:
        """The ARGS and PREP an EXEC names, taken off the pending maps."""
        args = self._pending_args.get(old_tid)
        if args is not None and args.boot_ns == args_ns and args_ns:
            self._drop_args(old_tid)
        else:
            args = None
        prep = self._pending_prep.pop(old_tid, None)
        if prep is not None and (prep.boot_ns != prep_ns or not prep_ns):
            prep = None
        return args, prep

    # --- EXIT ---------------------------------------------------------------------

    def _start_from_bounds(self, lo: int, hi: int) -> int | None:
        if not lo or not hi:
            return None
        ticks = self.identity.ticks_from_boot_ns
        a, b = ticks(max(lo - START_MARGIN_NS, 0)), ticks(hi + START_MARGIN_NS)
        return a if a == b else None

    def _exit(self, raw: bytes) -> ExitEvent:
        _, _, boot_ns, start_lo, start_hi, pid, flags, comm = EXIT.unpack_from(raw)
        start = self._start_from_bounds(start_lo, start_hi) if flags & X_START_KNOWN else None
        known_start = self.lineage.exited(pid, boot_ns)
        if start is None:
            start = known_start
        return ExitEvent(
            timestamp=self.identity.boot_ns_to_epoch_ns(boot_ns),
            pid=pid,
            start_ticks=start or 0,
            exit_code=None,  # not in any tracepoint: unavailable (docs/backends.md)
            signal=None,
            core_dumped=False,
            comm=text(comm.split(b"\0", 1)[0]),
        )

    # --- EXEC ---------------------------------------------------------------------

    def _exec(self, raw: bytes) -> ExecEvent:
        (_, size, boot_ns, cgroup_id, args_ns, prep_ns, start_lo, start_hi, parent_image, ppid_life,
         host_pid, host_tid, old_tid, uid, gid, ppid, parent_kind, image_ppid, flags, filename_len,
         comm) = EXEC.unpack_from(raw)
        if EXEC.size + filename_len != size:
            raise ValueError(f"EXEC of {size} bytes holds a {filename_len}-byte filename")
        missing: set[str] = set()
        cmdpath_raw = raw[EXEC.size:size].split(b"\0", 1)[0]
        path_truncated = ["cmdpath"] if flags & E_FILENAME_CUT else []
        args, prep = self._claim(old_tid, args_ns, prep_ns)
        snap = self._image_snapshot(host_pid, boot_ns, args)
        host_ppid, from_kernel = self._parent(host_pid, boot_ns, parent_kind, ppid, flags)
        start = self._start(host_pid, boot_ns, parent_kind, flags, start_lo, start_hi, snap)
        pid, vppid, pid_ns = self._own_ns_ids(host_pid, host_ppid, ppid_life, parent_kind, flags, snap)
        exe_fields, exec_id = self._executable(host_pid, boot_ns, start, snap)
        parent_exec_id = ""
        if flags & E_IMAGE_KNOWN:
            parent_exec_id = self.lineage.image_exec_id(image_ppid, parent_image)
        else:
            image_ppid = 0
        interp_fields = _interpreter(snap)

        # Is it a #! script (or binfmt_misc), whose argv the kernel rewrote?
        is_script = None if prep is None else prep.interp != cmdpath_raw
        argv, argc, argv_cut, interp = self._argv(args, prep, snap, cmdpath_raw, is_script, missing)
        env, envc, env_cut = self._env(args, snap, missing)
        if prep is not None and prep.cut:
            path_truncated.append("interp")
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
            timestamp=self.identity.boot_ns_to_epoch_ns(boot_ns),
            pid=have("pid", pid, 0),
            tid=have("tid", pid, 0),
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
            cmdpath=text(cmdpath_raw),
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
        self.lineage.learn(host_pid, host_ppid, bool(from_kernel), start)
        return ev

    def _image_snapshot(self, host_pid: int, boot_ns: int, args: _PendingArgs | None) -> procfs.Snapshot | None:
        """/proc/PID of the image this exec began, or None if the process
        exec'd again or exited before it was read."""
        # The process's argv tells scripts apart on kernels without
        # sched_prepare_exec, and checks the argv read at the syscall.
        want_environ = args is None or bool(args.flags & A_ENV_UNREADABLE)
        snap = procfs.snapshot(host_pid, True, want_environ, 2 * ARGS_MAX + STR_MAX * 4)
        if snap is not None:
            token = self.image_token(host_pid)
            if token is None or token[1] != boot_ns:
                snap = None  # exec'd again or exited since: not this image
        if snap is None:
            self.proc_unverified += 1
        return snap

    def _parent(self, host_pid: int, boot_ns: int, parent_kind: int, ppid: int,
                flags: int) -> tuple[int | None, bool | None]:
        """host_ppid and invoked_from_kernel: from the kernel map while the
        forker lives, else from what lineage knows."""
        if parent_kind == P_ALIVE:
            return ppid, bool(flags & E_PARENT_KTHREAD)
        if parent_kind in (P_PARENT_OF, P_PREEXISTING):
            subject = ppid if parent_kind == P_PARENT_OF else host_pid
            k = self.lineage.trusted(subject, boot_ns)
            if k is not None and k.ppid is not None:
                return k.ppid, k.ppid_kthread
        return None, None

    def _start(self, host_pid: int, boot_ns: int, parent_kind: int, flags: int, start_lo: int, start_hi: int,
               snap: procfs.Snapshot | None) -> int | None:
        """start_ticks: /proc's when verified, else the fork time bounds,
        else what lineage knows of a process forked before the agent."""
        if snap is not None and snap.start_ticks is not None:
            return snap.start_ticks
        start = self._start_from_bounds(start_lo, start_hi) if flags & E_START_KNOWN else None
        if start is None and parent_kind == P_PREEXISTING:
            k = self.lineage.trusted(host_pid, boot_ns)
            if k is not None:
                start = k.start_ticks
        return start

    def _own_ns_ids(self, host_pid: int, host_ppid: int | None, ppid_life: int, parent_kind: int, flags: int,
                    snap: procfs.Snapshot | None) -> tuple[int | None, int | None, int | None]:
        """pid (= tid after the exec), ppid and pid_ns in the process's own
        pid namespace."""
        if flags & E_HOST_PID_NS:
            return host_pid, host_ppid, self.host_pid_ns
        if snap is not None and snap.nspid and snap.pid_ns is not None:
            vppid = self._ns_ppid(host_ppid, ppid_life, parent_kind, len(snap.nspid) - 1, snap.pid_ns)
            return snap.nspid[-1], vppid, snap.pid_ns
        return None, None, None

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
        token = self.image_token(host_ppid)
        if nspid is None or token is None or token[0] != ppid_life:
            return None  # the parent is gone: not the one read
        parent_level = len(nspid) - 1
        if parent_level < level:
            return 0  # the parent is outside the process's namespace
        if parent_level == level and parent_ns == pid_ns:
            return nspid[level]
        return None

    def _executable(self, host_pid: int, boot_ns: int, start: int | None,
                    snap: procfs.Snapshot | None) -> tuple[tuple[str, int, int, int, int] | None, str]:
        """(pathname, dev, inode, ctime, inode_mode) of the executable, and
        the exec_id they and the start time make (kept for the children's
        parent_exec_id)."""
        if snap is None or snap.exe is None or snap.exe_st is None:
            return None, ""
        st = snap.exe_st
        exe_fields = (text(snap.exe), st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mode)
        if start is None:
            return exe_fields, ""
        exec_id = self.identity.exec_id(host_pid, start, st.st_dev, st.st_ino)
        self.lineage.remember_image(host_pid, boot_ns, exec_id)
        return exe_fields, exec_id

    def _argv(self, args: _PendingArgs | None, prep: _PendingPrep | None, snap: procfs.Snapshot | None, cmdpath: bytes,
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
            elif _rewritten(proc_argv, passed, cmdpath):
                is_script, interp = True, text(proc_argv[0])
        if is_script is False:
            if proc_argv is not None and complete and proc_argv != passed:
                return unavailable()  # changed since, or by another thread during the call: unverified
            block = b"".join(a + b"\0" for a in passed)
            argv = self.argv_blocks.get(block, not complete)
            argc = None if args.flags & A_ARGC_UNKNOWN else complete_count
            return argv, argc, not complete, interp
        if is_script and proc_argv is not None and complete and _rewritten(proc_argv, passed, cmdpath):
            argv, cut = from_block(cmdline or b"")
            return argv, len(proc_argv), cut, interp
        return unavailable()

    def _env(self, args: _PendingArgs | None, snap: procfs.Snapshot | None,
             missing: set[str]) -> tuple[list[str], int | None, bool]:
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


def _interpreter(snap: procfs.Snapshot | None) -> tuple[str, int, int, int] | None:
    """(path, dev, inode, ctime) of the ELF interpreter; empty for a static
    executable, None if unknown."""
    if snap is None:
        return None
    if snap.interp_static:
        return ("", 0, 0, 0)
    if snap.interp is not None:
        ipath, ist = snap.interp
        return (text(ipath), ist.st_dev, ist.st_ino, ist.st_ctime_ns)
    return None


def _rewritten(proc_argv: list[bytes], passed: list[bytes], cmdpath: bytes) -> bool:
    """proc_argv is binfmt_script's rewrite of passed: interpreter (and its
    #! argument, nested interpreters), the script path, then the caller's
    argv[1:]."""
    tail = [cmdpath] + passed[1:]
    return len(proc_argv) > len(tail) and proc_argv[-len(tail):] == tail


_FIELD_ORDER = [name for name in ExecEvent.__slots__ if name not in ("shared", "unavailable")]
