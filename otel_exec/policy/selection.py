"""The selection filters (--comm, --exclude-comm, --path-prefix, --uid,
--container-only, --cgroup) as user space applies them.

The kernel applies them to every exec (bpf/otel_exec.bpf.c, filtered());
the processes already running at start are read from /proc instead
(host/procevents.py), and this is where they are matched, with the
kernel's meaning as far as /proc tells it: comm as /proc/PID/comm, the real
uid, the executable's path (an observed process has no path as exec'd,
cmdpath, to match), the pid namespace against the agent's, and the cgroup v2
path at or below a configured one. A fact that could not be read matches no
filter that needs it: a process is reported only when it is known to pass.
"""
from __future__ import annotations

from collections.abc import Collection


class Selection:
    """The filters of one configuration. `host_pid_ns`: the agent's pid
    namespace, given with --container-only (None without it); `cgroups`:
    the --cgroup paths in the hierarchy (host.cgroups.resolve)."""

    def __init__(self, comm: Collection[str] = (), exclude_comm: Collection[str] = (),
                 path_prefix: Collection[str] = (), uid: Collection[int] = (), host_pid_ns: int | None = None,
                 cgroups: Collection[str] = ()) -> None:
        self.comm = frozenset(comm)
        self.exclude_comm = frozenset(exclude_comm)
        self.path_prefix = tuple(path_prefix)
        self.uid = frozenset(uid)
        self.host_pid_ns = host_pid_ns
        # "/a/b" matches "/a/b" and "/a/b/c", not "/a/bc": compared with a
        # trailing slash (the root's "/" then matches every path).
        self.cgroup_dirs = tuple(path.rstrip("/") + "/" for path in cgroups)

    @property
    def needs_uid(self) -> bool:
        return bool(self.uid)

    @property
    def needs_pid_ns(self) -> bool:
        return self.host_pid_ns is not None

    @property
    def needs_cgroup(self) -> bool:
        return bool(self.cgroup_dirs)

    def reports(self, comm: str, uid: int | None, pathname: str, pid_ns: int | None = None,
                cgroup_path: str | None = None) -> bool:
        """Whether a process with these facts passes every filter given;
        `pid_ns` is read only when needs_pid_ns, `cgroup_path` only when
        needs_cgroup, `uid` (the real one) only when needs_uid."""
        if self.comm and comm not in self.comm:
            return False
        if comm in self.exclude_comm:
            return False
        if self.uid and uid not in self.uid:
            return False
        if self.path_prefix and not pathname.startswith(self.path_prefix):
            return False
        if self.host_pid_ns is not None and (pid_ns is None or pid_ns == self.host_pid_ns):
            return False
        if self.cgroup_dirs and (cgroup_path is None or not (cgroup_path.rstrip("/") + "/").startswith(
                self.cgroup_dirs)):
            return False
        return True
