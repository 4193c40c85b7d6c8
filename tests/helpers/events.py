"""Synthetic exec events for unit tests (no kernel): a minimal one for the
process table and span lineage, a fully filled one for the OTLP encoding,
and the decoding of encoded attributes back to Python values."""
from __future__ import annotations

import os
import stat

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_exec.model.events import ExecEvent


def exec_ev(pid, ppid, start_ticks, exec_id, *, parent_exec_id="kernel-parent-id", path="/usr/bin/x",
            argv=("x",), ts=1_000):
    return ExecEvent(
        timestamp=ts, pid=pid, tid=pid, ppid=ppid, host_pid=pid, host_tid=pid, host_ppid=ppid,
        uid=0, gid=0, euid=0, egid=0, comm=os.path.basename(path)[:15], prev_comm="", pwd="/",
        mount_ns=0, pid_ns=0, cgroup_id=0, cgroup_path="/", container_id=None, hostname="h",
        process_start_time=0, exec_id=exec_id, parent_exec_id=parent_exec_id, cmdpath=path,
        pathname=path, dev=0, inode=0, ctime=0, inode_mode=0o100755, interpreter_pathname="",
        interpreter_dev=0, interpreter_inode=0, interpreter_ctime=0, argv=list(argv), interp=path,
        stdin_type=0, stdin_path="", invoked_from_kernel=False, env=[], argv_truncated=False,
        env_truncated=False, argc=len(argv), envc=0, start_ticks=start_ticks, image_ppid=ppid,
        path_truncated=[],
    )


def sample_exec(**over: object) -> ExecEvent:
    fields = dict(
        timestamp=1_700_000_000_123_456_789, pid=7, tid=7, ppid=1, host_pid=4242, host_tid=4242, host_ppid=4000,
        uid=1000, gid=1000, euid=0, egid=0, comm="sudo", prev_comm="bash", pwd="/home/u", mount_ns=4026531832,
        pid_ns=4026531836, cgroup_id=1234, cgroup_path="/system.slice/docker-" + "ab" * 32 + ".scope",
        container_id="ab" * 32, hostname="box", process_start_time=1_700_000_000_000_000_000, exec_id="e" * 32,
        parent_exec_id="f" * 32, cmdpath="sudo", pathname="/usr/bin/sudo", dev=65024, inode=12345,
        ctime=1_600_000_000_000_000_000, inode_mode=stat.S_IFREG | 0o4755,
        interpreter_pathname="/usr/lib/ld.so", interpreter_dev=65024, interpreter_inode=99,
        interpreter_ctime=1_500_000_000_000_000_000, argv=["sudo", "-u", "x y", "caf\u00e9"], interp="sudo",
        stdin_type=stat.S_IFCHR, stdin_path="/dev/pts/3", invoked_from_kernel=False,
        env=["HOME=/root", "API_TOKEN=[REDACTED]", "NOEQUALS", "HOME=/second"], argv_truncated=False,
        env_truncated=True,
        argc=4, envc=3, path_truncated=["pwd"], start_ticks=100, image_ppid=4000)
    fields.update(over)
    return ExecEvent(**fields)  # type: ignore[arg-type]


def any_to_py(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_to_py(e) for e in v.array_value.values]
    return getattr(v, kind)


def attrs(kvs) -> dict[str, object]:
    return {kv.key: any_to_py(kv.value) for kv in kvs}
