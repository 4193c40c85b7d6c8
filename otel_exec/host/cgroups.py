"""cgroup v2: where the hierarchy is mounted, and both directions between a
cgroup and its id (what bpf_get_current_cgroup_id() and its ancestor variant
return: the kernfs id, which is the inode number of the cgroup's directory):
resolve() a --cgroup spec to its id, CgroupPaths an id to its path; and
container_id(), the container a cgroup path names."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from otel_exec.errors import UsageError
from otel_exec.model.layout import CGROUP_DEPTH_MAX


# The id (directory inode) of the hierarchy's root cgroup, seen from any
# cgroup namespace.
ROOT_CGROUP_ID = 1


def cgroup2_root() -> str | None:
    """Where the whole cgroup2 hierarchy is mounted, or None. In a cgroup
    namespace (a container's, a pod's) the mount the runtime made shows the
    container's own cgroup as its root, while the kernel counts a cgroup's
    level from the real root: only a mount of the whole hierarchy (the
    host's /sys/fs/cgroup, e.g. a hostPath volume) gives the levels the
    kernel side matches. It is the one whose root directory has the root
    cgroup's id, whatever mountinfo shows as its root (/../.. from inside
    a namespace)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                pre, _, post = line.partition(b" - ")
                if post.split()[:1] == [b"cgroup2"]:
                    mount_point = os.fsdecode(pre.split()[4])
                    try:
                        if os.stat(mount_point).st_ino == ROOT_CGROUP_ID:
                            return mount_point
                    except OSError:  # hidden under another mount
                        continue
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class Cgroup:
    path: str  # in the hierarchy, as /proc/PID/cgroup shows it after "0::"
    id: int
    level: int  # 0 for the root


def resolve(spec: str) -> Cgroup:
    """A --cgroup value: the path in the hierarchy (/system.slice/x.service,
    as /proc/PID/cgroup shows it; a leading / is optional), or the cgroup's
    directory under the cgroup2 mount (/sys/fs/cgroup/system.slice)."""
    root = cgroup2_root()
    if root is None:
        raise UsageError(f"--cgroup {spec}: no cgroup2 file system is mounted with the whole hierarchy (--cgroup "
                         "needs cgroup v2; in a container, mount the host's /sys/fs/cgroup: "
                         "docs/operations.md#kubernetes)")
    path = os.path.normpath("/" + spec.lstrip("/"))
    if path == root or path.startswith(root.rstrip("/") + "/"):
        path = os.path.normpath("/" + path[len(root):].lstrip("/"))
    level = 0 if path == "/" else path.count("/")
    if level > CGROUP_DEPTH_MAX:
        raise UsageError(f"--cgroup {spec}: {level} levels deep; the kernel side matches cgroups at most "
                         f"{CGROUP_DEPTH_MAX} levels below the root")
    directory = root if path == "/" else root.rstrip("/") + path
    if not os.path.isfile(os.path.join(directory, "cgroup.procs")):
        raise UsageError(f"--cgroup {spec}: no such cgroup ({directory} is not a cgroup v2 directory)")
    return Cgroup(path, os.stat(directory).st_ino, level)


class CgroupPaths:
    """cgroup v2 id -> its path in the hierarchy, by a walk of the cgroup2
    mount. Ids are not reused within a boot, so a mapping once found stays
    right."""

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
                            # as the kernel's strings are decoded (model.blocks.text)
                            paths[e.inode()] = sub.decode("utf-8", "backslashreplace")
                            stack.append((e.path, sub))
            except OSError:
                continue
        self._paths = paths


# Leaf-most cgroup component naming a container, for the cgroup layouts of
# docker (systemd and cgroupfs drivers), containerd/CRI, cri-o and podman.
_CONTAINER_CGROUP = re.compile(
    r"^(?:docker-|cri-containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$"
)


def container_id(cgroup_path: str) -> str | None:
    for part in reversed(cgroup_path.split("/")):
        m = _CONTAINER_CGROUP.match(part)
        if m:
            return m.group(1)
    return None
