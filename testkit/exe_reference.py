"""Reference values for executable identity tests, from tools that share
no code with otel_exec.host.exefile (sha256sum, readelf -n, go tool
buildid, the htlhash definition read literally); programs to compute them
for (gcc, go); and an exec event for a file as the kernel would report it."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from otel_exec.model.events import ExecEvent

HELLO_C = "int main(void) { return 0; }\n"
HELLO_GO = 'package main\n\nimport "os"\n\nfunc main() { os.Exit(0) }\n'


def reference_htlhash(path: Path) -> str:
    """The definition read literally: SHA-256 of File[:4096] + File[-4096:]
    + BigEndianUInt64(Len(File)), first 16 bytes in hex."""
    data = path.read_bytes()
    return hashlib.sha256(data[:4096] + data[-4096:] + len(data).to_bytes(8, "big")).digest()[:16].hex()


def sha256sum(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def readelf_build_id(path: Path) -> str | None:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    return m.group(1) if m else None


def go_tool_buildid(path: Path) -> str:
    return subprocess.run(["go", "tool", "buildid", str(path)], capture_output=True, text=True, check=True,
                          env=go_env(path.parent)).stdout.strip()


def go_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp), "GOCACHE": str(tmp / "gocache"), "GOPATH": str(tmp / "gopath"),
            "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}


def build_c(tmp: Path, name: str, *flags: str) -> Path:
    src = tmp / f"{name}.c"
    src.write_text(HELLO_C)
    out = tmp / name
    subprocess.run(["gcc", "-O2", *flags, "-o", str(out), str(src)], check=True)
    return out


def build_go(tmp: Path) -> Path:
    """A Go binary, built here: the Go toolchain is a test requirement
    (Debian: golang-go)."""
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed to build a Go test binary: apt-get install golang-go")
    (tmp / "main.go").write_text(HELLO_GO)
    out = tmp / "hello-go"
    subprocess.run(["go", "build", "-o", str(out), "main.go"], cwd=tmp, check=True, env=go_env(tmp))
    return out


NO_PID = 2**22 + 1  # above pid_max: /proc/NO_PID/exe never opens, the path is used


def exec_event(path: Path | str, pid: int = NO_PID, cmdpath: str | None = None, interp: str | None = None,
               pwd: str = "/") -> ExecEvent:
    path = str(path)
    try:
        st = os.stat(path)
        dev, ino, ctime = st.st_dev, st.st_ino, st.st_ctime_ns
    except OSError:
        dev = ino = ctime = 1
    cmdpath = cmdpath or path
    return ExecEvent(
        timestamp=1, pid=pid, tid=pid, ppid=1, host_pid=pid, host_tid=pid, host_ppid=1, image_ppid=1,
        process_start_time=0, start_ticks=0, exec_id="", parent_exec_id="", uid=0, gid=0, euid=0, egid=0,
        comm="x", prev_comm="", pwd=pwd, mount_ns=0, pid_ns=0, cgroup_id=0, cgroup_path="/", container_id=None,
        hostname="h", cmdpath=cmdpath, pathname=path, dev=dev, inode=ino, ctime=ctime, inode_mode=0o100755,
        interpreter_pathname="", interpreter_dev=0, interpreter_inode=0, interpreter_ctime=0, argv=["x"],
        interp=interp or cmdpath, stdin_type=0, stdin_path="", invoked_from_kernel=False, env=[],
        argv_truncated=False, env_truncated=False, argc=1, envc=0, path_truncated=[])


IDENTITY_FIELDS = ("executable_identity", "script_identity")


def same_identity(one: dict | None, other: dict | None) -> bool:
    """Two agents' identity of one exec (console form) never disagree on a
    value. One may have values where the other has a flag: each hashes on
    its own worker and waits a bounded time (pending), and they may hold
    different privileges (the BCC agent reads /proc/PID/exe of a deleted or
    memfd executable, the CO-RE agent says gone or memfd)."""
    if one is None or other is None:
        return one == other
    return one == other or "htlhash" not in one or "htlhash" not in other
