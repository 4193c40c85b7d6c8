"""What an agent in a pod sees for --cgroup: a process in a cgroup
namespace of its own (as a container runtime makes one) with the runtime's
cgroup2 mount of its own subtree and, as the DaemonSet gives it, the host's
whole hierarchy mounted too. --cgroup takes host paths (as records show
them) with the kernel's levels; without the host's hierarchy it is refused,
never silently matching nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers.agent_run import ROOT
from otel_exec.host.cgroups import cgroup2_root

pytestmark = [pytest.mark.kernel, pytest.mark.needs_cgroup2]

IN_POD = r"""
import json, os, subprocess, sys
from otel_exec.errors import UsageError
from otel_exec.host.cgroups import cgroup2_root, resolve
pod_cgroup, runtime_mount, host_root = sys.argv[1:4]
# The runtime's own mount: its root is the pod's cgroup.
subprocess.run(["mount", "-t", "cgroup2", "cgroup2", runtime_mount], check=True)
seen = {"own_cgroup": open("/proc/self/cgroup").read().splitlines()[-1],
        "runtime_mount_id": os.stat(runtime_mount).st_ino,
        "root": cgroup2_root(), "pod": vars(resolve(pod_cgroup))}
# Without the host's hierarchy.
subprocess.run(["umount", "-l", host_root], check=True)
try:
    resolve(pod_cgroup)
except UsageError as e:
    seen["without_host_mount"] = str(e)
print(json.dumps(seen))
"""


def test_pod_cgroup_namespace(tmp_path: Path) -> None:
    host_root = cgroup2_root()
    assert host_root is not None
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    pod = Path(host_root, f"oe-pod-{uuid.uuid4().hex[:8]}")
    container = pod / "ctr"
    container.mkdir(parents=True)
    runtime_mount = tmp_path / "cgroup"
    runtime_mount.mkdir()
    try:
        out = subprocess.run(
            ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec unshare -C -m --propagation private "$@"',
             "sh", str(container), sys.executable, "-c", IN_POD, f"/{pod.name}/ctr", str(runtime_mount), host_root],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
    finally:
        container.rmdir()
        pod.rmdir()
    assert seen["own_cgroup"] == "0::/"  # the namespace hides where the pod really is
    assert seen["root"] == host_root  # the host's hierarchy, not the runtime's mount
    assert seen["pod"]["path"] == f"/{pod.name}/ctr" and seen["pod"]["level"] == 2  # the kernel's levels
    assert seen["pod"]["id"] == seen["runtime_mount_id"] != 1  # the same cgroup by id
    assert "whole hierarchy" in seen["without_host_mount"]
