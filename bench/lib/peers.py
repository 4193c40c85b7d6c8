"""The tracers otel-exec is compared with, on the same storm: bpftrace (an
execsnoop with argv), forkstat, auditd (an execve rule) and a psutil poller.

Each peer records the storm the way its users would run it; the benchmark
counts the storm's execs in what it wrote (by the storm program's unique
path, see storm.py), checks the command line it attributed to each against
the storm's own (Storm.argv: the ground truth), and measures the CPU of the
tracer's own process(es): work done in the kernel on the exec'ing task's
behalf (a BPF program, the audit hook) shows up in the exec rate instead.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lib.procs import (
    Child,
    Children,
    cpu_ticks,
    kb_to_mb,
    pid_of_comm,
    run_checked,
    status_kb,
    ticks_to_us,
)
from lib.storm import Storm

PEER_PACKAGES = ("bpftrace", "forkstat", "auditd", "python3-psutil")
INSTALL_COMMAND = "apt-get install -y " + " ".join(PEER_PACKAGES)
# bpftrace's tools/execsnoop.bt: milliseconds since start, pid, the argv
# passed to execve (join() prints it space-separated, each argument cut to 64
# bytes, at most 16 of them).
BPFTRACE_PROGRAM = ('tracepoint:syscalls:sys_enter_exec* { printf("%-10u %-6d ", elapsed / 1e6, pid); '
                    'join(args->argv); }')
PSUTIL_HZ = 10.0
_POLLER = Path(__file__).with_name("psutil_poller.py")
_SYSTEM_PYTHON = "/usr/bin/python3"
AUDIT_KEY = "oebench"
AUDIT_RULE = ["-F", "arch=b64", "-S", "execve", "-k", AUDIT_KEY]
# Debian's /etc/audit/rules.d/audit.rules default ("-b 8192 ... to survive
# stress events"); with the kernel's own, 64, a storm's tasks mostly wait for
# auditd to catch up, which measures the backlog instead of auditd.
AUDIT_BACKLOG = 8192
_READY_TIMEOUT = 30.0
# A tracer whose output has not grown for this long has written all it will.
_IDLE = 3.0
_STOP_TIMEOUT = 15.0


@dataclass
class PeerRun:
    rate: float
    recorded: int  # the storm's execs in the tracer's output
    argv_ok: int  # of those, the ones with the storm's exact command line
    seen: int  # all execs in it: the storm's and any other process's
    cpu_us_per_exec: float
    hwm_mb: float
    notes: list[str] = field(default_factory=list)


@dataclass
class PeerResult:
    name: str
    unavailable: str | None = None  # why it was not measured
    untraced_rates: list[float] = field(default_factory=list)
    runs: list[PeerRun] = field(default_factory=list)


def _wait_until_stable(count: Callable[[], int], target: int) -> int:
    """Poll count() until it reaches target or stops growing for _IDLE s."""
    last, last_change = count(), time.monotonic()
    while last < target and time.monotonic() - last_change < _IDLE:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, last_change = now, time.monotonic()
    return last


def _wait_for(what: str, ready: Callable[[], bool], child: Child | None = None) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while not ready():
        if child is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {child.proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {_READY_TIMEOUT}s")
        time.sleep(0.1)


def _tail(path: Path, limit: int = 1500) -> str:
    return path.read_bytes()[-limit:].decode(errors="replace").strip() if path.exists() else ""


class _LineCounter:
    """Counts, incrementally, lines of a growing file that match."""

    def __init__(self, path: Path, match: Callable[[list[str]], bool]) -> None:
        self._path = path
        self._match = match
        self._offset = 0
        self._partial = b""
        self.count = 0

    def poll(self) -> int:
        if self._path.exists():
            with self._path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()
            self.count += sum(1 for line in lines if self._match(line.decode(errors="replace").split()))
        return self.count


class _Peer:
    """A tracer the benchmark compares otel-exec with, on the same storm."""

    name: str
    tools: tuple[str, ...]  # the executables it needs

    def __init__(self, children: Children, workdir: Path, storm: Storm) -> None:
        self._children = children
        self._workdir = workdir
        self._storm = storm

    def unavailable(self) -> str | None:
        """Why it cannot run here, or None."""
        if any(shutil.which(tool) is None for tool in self.tools):
            return f"not installed ({INSTALL_COMMAND}, or --install-peers)"
        return None

    def _measure_lines(self, child: Child, what: str, ready: Callable[[], bool], total: int, marker: str,
                       storm_lines: _LineCounter, argv_lines: _LineCounter, all_lines: _LineCounter) -> PeerRun:
        """For a tracer that writes a line per exec as it goes: once ready(),
        the storm and its measures (_measure_child), the lines counted."""
        try:
            _wait_for(what, ready, child)
        except BaseException:
            self._children.stop(child)
            raise
        seen0 = all_lines.poll()
        run = _measure_child(self._children, child, self._storm, total, marker, storm_lines.poll, stopped_count=None)
        run.seen = all_lines.poll() - seen0
        run.argv_ok = argv_lines.poll()
        return run


class Bpftrace(_Peer):
    name = "bpftrace"
    tools = ("bpftrace",)

    def unavailable(self) -> str | None:
        return super().unavailable() or ensure_tracefs()

    def traced_run(self, total: int, marker: str) -> PeerRun:
        out, err = self._workdir / "bpftrace.out", self._workdir / "bpftrace.err"
        out.unlink(missing_ok=True)
        # A line: "MS PID ARGV...".
        program, sentinel, argv = str(self._storm.program), str(self._storm.sentinel), self._storm.argv()
        storm_lines = _LineCounter(out, lambda f: len(f) >= 3 and f[2] == program)
        argv_lines = _LineCounter(out, lambda f: f[2:] == argv)
        sentinel_lines = _LineCounter(out, lambda f: len(f) >= 3 and f[2] == sentinel)
        all_lines = _LineCounter(out, lambda f: len(f) >= 2 and f[0].isdigit() and f[1].isdigit())
        with out.open("wb") as o, err.open("wb") as e:
            child = self._children.start("bpftrace", ["bpftrace", "-e", BPFTRACE_PROGRAM],
                                         stop_signal=signal.SIGINT, stdout=o, stderr=e)

        # "Attaching 1 probe..." comes before the attach: wait until an
        # exec actually shows up.
        def ready() -> bool:
            self._storm.exec_sentinel()
            return sentinel_lines.poll() > 0
        run = self._measure_lines(child, f"bpftrace ({_tail(err)})", ready, total, marker,
                                  storm_lines, argv_lines, all_lines)
        # bpftrace's own report of perf buffer overflows: "Lost N events".
        lost = sum(int(f[1]) for f in (line.split() for line in out.read_text(errors="replace").splitlines())
                   if len(f) == 3 and f[0] == "Lost" and f[1].isdigit())
        if lost:
            run.notes.append(f"bpftrace lost {lost} events")
        return run


class Forkstat(_Peer):
    name = "forkstat"
    tools = ("forkstat",)

    def traced_run(self, total: int, marker: str) -> PeerRun:
        out = self._workdir / "forkstat.out"
        program, argv = str(self._storm.program), self._storm.argv()
        # A line: "TIME exec PID COMMAND-LINE", the command line read from
        # /proc when forkstat gets to it. Its stdout to a file is
        # block-buffered: its lines are only complete once it exited, so they
        # are counted after it stopped.
        attributed = _LineCounter(out, lambda f: len(f) >= 4 and f[1] == "exec" and f[3] == program)
        argv_lines = _LineCounter(out, lambda f: len(f) >= 4 and f[1] == "exec" and f[3:] == argv)
        execs_seen = _LineCounter(out, lambda f: len(f) >= 3 and f[1] == "exec")
        with out.open("wb") as o:
            child = self._children.start("forkstat", ["forkstat", "-e", "exec"],
                                         stop_signal=signal.SIGINT, stdout=o)
        try:
            # Ready once its proc-connector (NETLINK_CONNECTOR, 11) socket is
            # bound; it subscribes right after, hence the short pause.
            _wait_for("forkstat", lambda: _has_netlink_socket(child.pid, 11), child)
            time.sleep(0.3)
        except BaseException:
            self._children.stop(child)
            raise
        run = _measure_child(self._children, child, self._storm, total, marker, None, stopped_count=attributed.poll)
        # Includes the few execs between its start and the storm's.
        run.seen = execs_seen.poll()
        run.argv_ok = argv_lines.poll()
        run.notes.append("storm execs not recorded show no or another command line (read from /proc, "
                         "after the process may have exited)")
        return run


def _has_netlink_socket(pid: int, protocol: int) -> bool:
    try:
        lines = Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(int(f[1]) == protocol and int(f[2]) == pid for f in (line.split() for line in lines))


def _measure_child(
    children: Children,
    child: Child,
    storm: Storm,
    total: int,
    marker: str,
    live_count: Callable[[], int] | None,
    stopped_count: Callable[[], int] | None,
) -> PeerRun:
    """Storm with a started tracer, then stop it: its CPU from just before the
    storm to its exit (a zombie's /proc stat still has it), peak RSS before it stops."""
    notes: list[str] = []
    try:
        ticks0 = cpu_ticks(child.pid)
        result = storm.run(total, 0, marker)
        if live_count is not None:
            _wait_until_stable(live_count, total)
        else:
            time.sleep(1.0)
        hwm_kb = status_kb(child.pid, "VmHWM")
        ticks_before_stop = cpu_ticks(child.pid)
    except BaseException:
        children.stop(child)
        raise
    ticks1, polite = children.stop_measured(child, _STOP_TIMEOUT, lambda: cpu_ticks(child.pid))
    if not polite:
        notes.append(f"hung on SIGINT (killed after {_STOP_TIMEOUT:.0f}s)")
    ticks = (ticks1 if ticks1 is not None else ticks_before_stop) - ticks0
    count = stopped_count if stopped_count is not None else live_count
    assert count is not None
    # seen and argv_ok: set by the caller, which knows how to read its output.
    return PeerRun(result.rate, count(), 0, 0, ticks_to_us(ticks) / total, kb_to_mb(hwm_kb), notes)


class Auditd(_Peer):
    """auditd with one execve rule. Started here with a private config whose
    log lives in the work directory (never rotated mid-run), unless an
    auditd already runs: then that one and its log are used, and left running."""

    name = "auditd"
    tools = ("auditd", "auditctl")

    def __init__(self, children: Children, workdir: Path, storm: Storm) -> None:
        super().__init__(children, workdir / "audit", storm)

    def unavailable(self) -> str | None:
        missing = super().unavailable()
        if missing is not None:
            return missing
        try:
            _audit_status()
        except RuntimeError as e:
            return f"kernel audit unavailable: {e}"
        return None

    def traced_run(self, total: int, marker: str) -> PeerRun:
        saved = _audit_status()
        daemon_pid = saved.get("pid", 0)
        started: Child | None = None
        rule_added = False
        notes: list[str] = []
        try:
            if daemon_pid and Path(f"/proc/{daemon_pid}").exists():
                log_file = _auditd_log_file(Path("/etc/audit/auditd.conf"))
                notes.append(f"the running auditd and its log {log_file} (if it rotates mid-run, records are missed)")
            else:
                started, log_file = self._start_daemon()
                daemon_pid = started.pid
            audit_log = _AuditLog(log_file, self._storm.argv(), str(self._storm.sentinel))
            if saved.get("backlog_limit", 0) < AUDIT_BACKLOG:
                run_checked(["auditctl", "-b", str(AUDIT_BACKLOG)])
            run_checked(["auditctl", "-a", "always,exit", *AUDIT_RULE])
            rule_added = True

            def ready() -> bool:
                self._storm.exec_sentinel()
                audit_log.poll()
                return audit_log.sentinel > 0
            _wait_for("auditd", ready, started)

            kauditd = pid_of_comm("kauditd")
            if kauditd is None:
                notes.append("kauditd not found: its CPU is not included")

            def ticks() -> int:
                return cpu_ticks(daemon_pid) + (cpu_ticks(kauditd) if kauditd is not None else 0)

            lost0 = _audit_status().get("lost", 0)
            seen0 = audit_log.keyed
            ticks0 = ticks()
            result = self._storm.run(total, 0, marker)
            recorded = _wait_until_stable(lambda: audit_log.poll(), total)
            cpu = ticks() - ticks0
            seen = audit_log.keyed - seen0
            argv_ok = audit_log.argv_ok
            hwm_kb = status_kb(daemon_pid, "VmHWM")
            lost = _audit_status().get("lost", 0) - lost0
            if lost:
                notes.append(f"kernel audit lost {lost} records")
        finally:
            if rule_added:
                run_checked(["auditctl", "-d", "always,exit", *AUDIT_RULE])
            if started is not None:
                self._children.stop(started)
            _restore_audit(saved)
        return PeerRun(result.rate, recorded, argv_ok, seen, ticks_to_us(cpu) / total, kb_to_mb(hwm_kb), notes)

    def _start_daemon(self) -> tuple[Child, Path]:
        self._workdir.mkdir(exist_ok=True)
        log_file = self._workdir / "audit.log"
        log_file.unlink(missing_ok=True)
        conf = Path("/etc/audit/auditd.conf").read_text() if Path("/etc/audit/auditd.conf").exists() else ""
        overrides = {
            "log_file": str(log_file),
            # One log for the whole run: rotating it would hide records.
            "max_log_file_action": "IGNORE",
            # Disk-space actions could suspend logging on a small /tmp.
            "space_left": "2",
            "admin_space_left": "1",
            "space_left_action": "IGNORE",
            "admin_space_left_action": "IGNORE",
            "disk_full_action": "IGNORE",
        }
        kept = [line for line in conf.splitlines() if line.split("=", 1)[0].strip() not in overrides]
        config = self._workdir / "auditd.conf"
        config.write_text("\n".join(kept + [f"{k} = {v}" for k, v in overrides.items()]) + "\n")
        config.chmod(0o640)  # auditd refuses a config others can write
        with (self._workdir / "auditd.err").open("wb") as err:
            child = self._children.start("auditd", ["auditd", "-n", "-c", str(self._workdir)], stderr=err)
        _wait_for("auditd", lambda: _audit_status().get("pid") == child.pid, child)
        return child, log_file


def _audit_status() -> dict[str, int]:
    out = run_checked(["auditctl", "-s"])
    status = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            status[key] = int(value)
    return status


def _restore_audit(saved: dict[str, int]) -> None:
    """Put back what auditd or this benchmark changed: enabled flag and backlog limit."""
    now = _audit_status()
    if "backlog_limit" in saved and now.get("backlog_limit") != saved["backlog_limit"]:
        run_checked(["auditctl", "-b", str(saved["backlog_limit"])])
    if "enabled" in saved and now.get("enabled") != saved["enabled"]:
        run_checked(["auditctl", "-e", str(saved["enabled"])])


def _auditd_log_file(conf: Path) -> Path:
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "log_file":
            return Path(value.strip())
    return Path("/var/log/audit/audit.log")


class _AuditLog:
    """Counts exec events in an audit log: a SYSCALL record with our key and
    an EXECVE record whose argv[0] is the program (argv: the whole command
    line), under the same serial."""

    _SERIAL = re.compile(r"msg=audit\(\d+\.\d+:(\d+)\)")
    # a0="text", or a0=HEX when the argument holds a space, quote or control character.
    _ARG = re.compile(r' a(\d+)=(?:"([^"]*)"|([0-9A-F]+))')

    def __init__(self, path: Path, argv: list[str], sentinel: str) -> None:
        self._path = path
        self._offset = path.stat().st_size if path.exists() else 0
        self._partial = b""
        self._keyed: set[str] = set()
        self._program_serials: set[str] = set()
        self._argv_serials: set[str] = set()
        self._sentinel_serials: set[str] = set()
        self._key = f' key="{AUDIT_KEY}"'
        self._argv = argv
        self._program = f' a0="{argv[0]}"'
        self._sentinel = f' a0="{sentinel}"'

    def poll(self) -> int:
        if self._path.exists():
            with self._path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()
            for raw in lines:
                line = raw.decode(errors="replace")
                match = self._SERIAL.search(line)
                if match is None:
                    continue
                if line.startswith("type=SYSCALL") and self._key in line:
                    self._keyed.add(match[1])
                elif line.startswith("type=EXECVE"):
                    if self._program in line:
                        self._program_serials.add(match[1])
                        if self._args(line) == self._argv:
                            self._argv_serials.add(match[1])
                    elif self._sentinel in line:
                        self._sentinel_serials.add(match[1])
        return len(self._keyed & self._program_serials)

    def _args(self, line: str) -> list[str]:
        return [quoted if hexed is None else bytes.fromhex(hexed).decode(errors="replace")
                for _, quoted, hexed in (m.groups() for m in self._ARG.finditer(line))]

    @property
    def argv_ok(self) -> int:
        return len(self._keyed & self._argv_serials)

    @property
    def sentinel(self) -> int:
        return len(self._keyed & self._sentinel_serials)

    @property
    def keyed(self) -> int:
        """Events of our rule so far: every execve, the storm's or not."""
        return len(self._keyed)


class PsutilPoller(_Peer):
    """A process poller (bench/lib/psutil_poller.py) at PSUTIL_HZ: what an
    agent without an exec hook sees. It misses most short-lived processes:
    that is what it stands for."""

    name = "psutil poller"
    tools = ()

    def unavailable(self) -> str | None:
        if psutil_python() is None:
            return f"psutil not importable by {sys.executable} or {_SYSTEM_PYTHON} ({INSTALL_COMMAND})"
        return None

    def traced_run(self, total: int, marker: str) -> PeerRun:
        out, ready = self._workdir / "psutil.out", self._workdir / "psutil.ready"
        out.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)
        # A line: "PID ARGV...".
        program, argv = str(self._storm.program), self._storm.argv()
        storm_lines = _LineCounter(out, lambda f: len(f) >= 2 and f[1] == program)
        argv_lines = _LineCounter(out, lambda f: f[1:] == argv)
        all_lines = _LineCounter(out, lambda f: len(f) >= 1 and f[0].isdigit())
        python = psutil_python()
        assert python is not None
        child = self._children.start(self.name, [python, str(_POLLER), str(out), str(ready), str(1 / PSUTIL_HZ)])
        run = self._measure_lines(child, self.name, ready.exists, total, marker, storm_lines, argv_lines, all_lines)
        run.notes.append(f"polls every {1 / PSUTIL_HZ:.1f} s: a process that lives shorter is seen only by chance")
        return run


PEERS = (Bpftrace, Forkstat, Auditd, PsutilPoller)


def psutil_python() -> str | None:
    """An interpreter that imports psutil: this one, else the system's (python3-psutil)."""
    for python in (sys.executable, _SYSTEM_PYTHON):
        if subprocess.run([python, "-c", "import psutil"], capture_output=True, check=False).returncode == 0:
            return python
    return None


def install_peers() -> None:
    subprocess.run(["apt-get", "install", "-y", *PEER_PACKAGES], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def ensure_tracefs() -> str | None:
    """bpftrace finds tracepoints in tracefs: mount it if nothing is there; a reason if impossible.

    The mount is left in place: unmounting could break another tracer
    started meanwhile, and a mounted tracefs harms nothing.
    """
    for path in (Path("/sys/kernel/tracing/events"), Path("/sys/kernel/debug/tracing/events")):
        if path.is_dir():
            return None
    result = subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"tracefs missing and cannot be mounted: {result.stderr.strip()}"
    print("bench: mounted tracefs on /sys/kernel/tracing (left mounted)")
    return None
