"""The exec program's two builds write the same bytes: handle_exec (its walks
read kernel objects with plain loads through bpf_rdonly_cast; this kernel
runs it) and handle_exec_probed (probe reads; what a kernel before 6.2 runs),
both loaded in this process, attached at once to the same execs. The execs
take every branch of the walks: renamed, deep, long and inline-sized names, a
mount crossed, a private mount, memfd, deleted and script executables, every
kind of stdin, cwd at / and in /proc, a nested cgroup, pid and UTS namespaces.
tests/core/test_capture.py holds the build this kernel runs to ground truth;
this holds the other build to the same records.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from otel_exec.config import Config
from otel_exec.core import probes
from otel_exec.core.ringbuf import RingBuffer
from otel_exec.model import layout
from tests.helpers.exec_builds import both_builds, draining

pytestmark = pytest.mark.kernel

OFFSETS = layout.member_offsets(layout.EXEC_MEMBERS)
EXIT_OFFSETS = layout.member_offsets(layout.EXIT_MEMBERS)
CGROUP2 = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() \
    else Path("/sys/fs/cgroup")

# Runs with the mark in its environment ($1: a scratch directory, $2: a
# cgroup v2 directory to create and leave). Every exec ends in /bin/true or a
# copy of it.
WORKLOAD = r"""
set -u
T=$1; CG=$2; cd "$T"
/bin/true plain
/bin/true </dev/null; echo x | /bin/true; /bin/true <&-; /bin/true </etc/hostname
python3 -c 'import os,socket; a,b=socket.socketpair(); os.dup2(a.fileno(),0); os.execv("/bin/true",["true","sock"])'
(exec 100</dev/null; /bin/true fd-table-grown </etc/hostname)
for n in 31 32 39 40 41 255; do d=$(printf 'n%.0s' $(seq $n)); mkdir -p "$d/$d"; cp /bin/true "$d/$d/t$n"
  (cd "$d/$d" && ./t$n name$n); done
p=deep; for i in $(seq 70); do p=$p/d$i; done; mkdir -p $p; cp /bin/true $p/t; $p/t deep; (cd $p && ./t deep-cwd)
mkdir -p r1/sub; cp /bin/true r1/sub/t; r1/sub/t before-rename; mv r1 r2; r2/sub/t after-rename
ln -s /bin/true link; ./link symlink
printf '#!/bin/sh\nexec /bin/true script\n' > s.sh; chmod +x s.sh; ./s.sh
cp /bin/true gone; (exec 3<gone; rm gone; /proc/self/fd/3 deleted)
python3 -c 'import os; fd=os.memfd_create("mfd"); os.write(fd,open("/bin/true","rb").read()); os.execv(f"/proc/self/fd/{fd}",["memfd"])'
(cd / && /bin/true cwd-root); (cd /proc/self && /bin/true cwd-proc)
mkdir -p bind; mount --bind r2 bind && { bind/sub/t bind-mount; (cd bind/sub && ./t bind-cwd); umount bind; }
unshare -m --propagation private sh -c "mount -t tmpfs x '$T/bind' && cp /bin/true '$T/bind/tt' && '$T/bind/tt' tmpfs"
unshare -p -f --mount-proc /bin/true pid-ns
unshare -p -f sh -c 'unshare -p -f /bin/true pid-ns-2'
unshare -u sh -c 'echo long-hostname-of-more-than-forty-characters-xx > /proc/sys/kernel/hostname
  echo ab > /proc/sys/kernel/hostname; /bin/true uts'
unshare -u sh -c 'hostname 1234567890123456789012345678901234567890123456789012345678901234; /bin/true uts-64'
env -i OE_BUILDS_MARK="$OE_BUILDS_MARK" /bin/true empty-env
mkdir -p "$CG/a/b" && (echo $BASHPID > "$CG/a/b/cgroup.procs" && /bin/true cgroup)
"""


def programs_held() -> set[str]:
    """Names of the BPF programs this process holds."""
    ids = set()
    for fdinfo in Path("/proc/self/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        ids |= {int(line.split(":")[1]) for line in text.splitlines() if line.startswith("prog_id:")}
    shown = json.loads(subprocess.run(["bpftool", "--json", "prog", "show"], check=True,
                                      capture_output=True).stdout)
    return {p["name"] for p in shown if p["id"] in ids}


@pytest.fixture(name="both_builds")
def both_builds_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[probes.KernelProbes, RingBuffer]]]:
    with both_builds(monkeypatch, Config()) as loaded:
        yield loaded


def marked_records(got: list[bytes], mark: bytes) -> list[bytes]:
    """The exec records carrying the mark and the exit records of their
    processes, boot_ns zeroed, sorted."""
    execs = [r for r in got if layout.HEADER.unpack_from(r)[0] == layout.REC_EXEC and mark in r]
    pids = {struct.unpack_from("<I", r, OFFSETS["host_pid"])[0] for r in execs}
    exits = [r for r in got if layout.HEADER.unpack_from(r)[0] == layout.REC_EXIT
             and struct.unpack_from("<I", r, EXIT_OFFSETS["pid"])[0] in pids]
    return sorted(r[:8] + bytes(8) + r[16:] for r in execs + exits)


def test_direct_and_probed_builds_write_the_same_records(
        both_builds: list[tuple[probes.KernelProbes, RingBuffer]], tmp_path: Path) -> None:
    assert {"handle_exec", "handle_exec_probed"} <= programs_held()
    mark = f"OE_BUILDS_MARK={uuid.uuid4().hex}"
    cgroup = CGROUP2 / f"oe-builds-{os.getpid()}"
    env = dict(os.environ, OE_BUILDS_MARK=mark.split("=", 1)[1])
    with draining([ring for _, ring in both_builds]) as got:
        try:
            run = subprocess.run(["bash", "-c", WORKLOAD, "workload", str(tmp_path), str(cgroup)], env=env,
                                 capture_output=True, text=True, timeout=60)
        finally:
            for d in (cgroup / "a" / "b", cgroup / "a", cgroup):
                if d.exists():
                    d.rmdir()
        time.sleep(0.2)
    assert run.returncode == 0, run.stderr
    direct, probed = (marked_records(records, mark.encode()) for records in got)
    args = [r.split(b"\0") for r in direct]
    # Every case above ran and was recorded (a sample of the names).
    for arg in (b"deep-cwd", b"name255", b"after-rename", b"memfd", b"tmpfs", b"pid-ns-2", b"uts", b"cgroup"):
        assert any(arg in parts for parts in args), arg
    assert direct == probed
    for kp, _ in both_builds:
        assert not {k: v for k, v in kp.counters().items() if k.startswith("lost_") and v}
