"""Ground truth from /proc for a running process, checked against the event
the agent reported for it."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from otel_exec.host.identity import HostIdentity


IDENTITY = HostIdentity.current()


def esc(raw: bytes) -> str:
    """The documented escaping of non-UTF-8 bytes (docs/fields.md)."""
    return raw.decode("utf-8", "backslashreplace")


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def assert_live_process(ev: dict, pid: int) -> None:
    """The context fields of a running process, against its /proc entry."""
    st = proc_status(pid)
    uid, euid = (int(x) for x in st["Uid"].split()[:2])
    gid, egid = (int(x) for x in st["Gid"].split()[:2])
    assert (ev["uid"], ev["euid"], ev["gid"], ev["egid"]) == (uid, euid, gid, egid)
    assert ev["host_pid"] == pid == ev["host_tid"]
    assert ev["pid"] == int(st["NSpid"].split()[-1]) == ev["tid"]
    assert ev["host_ppid"] == int(st["PPid"])
    assert ev["comm"] == Path(f"/proc/{pid}/comm").read_text().strip()
    assert ev["pwd"] == os.readlink(f"/proc/{pid}/cwd")
    assert f"mnt:[{ev['mount_ns']}]" == os.readlink(f"/proc/{pid}/ns/mnt")
    assert f"pid:[{ev['pid_ns']}]" == os.readlink(f"/proc/{pid}/ns/pid")
    cg = [l for l in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if l.startswith("0::")]
    assert ev["cgroup_path"] == cg[0][3:]
    assert ev["hostname"] == socket.gethostname()
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert ev["start_ticks"] == ticks
    assert abs(ev["process_start_time"] - IDENTITY.boot_ns_to_epoch_ns(ticks * 10**9 // IDENTITY.clk_tck)) \
        < 10**9 // IDENTITY.clk_tck
    exe = os.stat(f"/proc/{pid}/exe")
    assert ev["exec_id"] == IDENTITY.exec_id(pid, ticks, exe.st_dev, exe.st_ino)
    assert ev["argv"] == [esc(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
    fd0 = f"/proc/{pid}/fd/0"
    assert ev["stdin_path"] == os.readlink(fd0)
    assert ev["stdin_type"] == stat.S_IFMT(os.stat(fd0).st_mode)
    assert ev["invoked_from_kernel"] is False


def whole_prefix(items: list[str], bound: int) -> list[str]:
    """docs/fields.md "Truncation": the elements that fit whole in a block
    of `bound` bytes (NULs included)."""
    out, used = [], 0
    for a in items:
        used += len(a.encode()) + 1
        if used > bound:
            break
        out.append(a)
    return out
