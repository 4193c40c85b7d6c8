"""Child processes of the benchmark: starting, measuring and always stopping them.

Every long-lived child (agent, collector, peer tracer, storm) is started in its
own session, so a Ctrl-C on the terminal reaches only the benchmark, which
then stops its children in a known order (see Children.stop_all) instead of
all of them receiving SIGINT at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads, live or exited), in clock ticks.

    Also works on a zombie that was not reaped yet, which is how a tracer's
    CPU is read including what it did while shutting down (see stop_measured).
    """
    # Fields after the ")" of comm, which may itself contain spaces or ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def status_kb(pid: int, key: str) -> int:
    """A "kB" line of /proc/PID/status, e.g. VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def written_bytes(pid: int) -> int:
    """wchar of /proc/PID/io: bytes the process handed to write(2) and its
    kin, all threads. For otel-exec that is its spool: every OTLP record is
    written there once (sends to the collector go through sendmsg, which
    wchar does not count)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise KeyError(f"wchar not in /proc/{pid}/io")


def tcp_bytes_received(port: int) -> int:
    """Bytes received so far (tcpi_bytes_received: TCP payload, headers not
    counted) on the established loopback connections whose local port is
    port, i.e. what clients sent to the server listening there; through
    `ss` (sock_diag). A connection closed meanwhile takes its count with it."""
    out = run_checked(["ss", "-tinH", "state", "established", "sport", "=", f":{port}"])
    return sum(int(n) for n in re.findall(r"\bbytes_received:(\d+)", out))


def bpf_run_time_ns(pid: int) -> int:
    """Kernel time spent in the BPF programs the process holds open (the
    run_time_ns of their fdinfo), summed: 0 unless kernel.bpf_stats_enabled
    is set (see BpfStats)."""
    total = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue  # closed meanwhile
        if "prog_id:" in text:
            total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("run_time_ns:")), 0)
    return total


class PidMax:
    """kernel.pid_max raised to at least `at_least` for the block (to hold
    many live processes), as it was after."""

    _SYSCTL = Path("/proc/sys/kernel/pid_max")

    def __init__(self, at_least: int) -> None:
        self._at_least = at_least

    def __enter__(self) -> PidMax:
        self._saved = self._SYSCTL.read_text()
        if int(self._saved) < self._at_least:
            self._SYSCTL.write_text(str(self._at_least))
        return self

    def __exit__(self, *exc: object) -> None:
        self._SYSCTL.write_text(self._saved)


def live_processes() -> int:
    """Processes on the machine now (the pids in /proc)."""
    return sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())


class BpfStats:
    """kernel.bpf_stats_enabled on for the block, as it was after: the
    kernel then times every BPF program run, at a small cost to each."""

    _SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

    def __enter__(self) -> BpfStats:
        self._saved = self._SYSCTL.read_text()
        self._SYSCTL.write_text("1")
        return self

    def __exit__(self, *exc: object) -> None:
        self._SYSCTL.write_text(self._saved)


def kb_to_mb(kb: int) -> float:
    """kB (KiB, as /proc reports) to MB (10**6 bytes, the targets' unit)."""
    return kb * 1024 / 1e6


def ticks_to_us(ticks: int) -> float:
    return ticks * 1e6 / CLK_TCK


def pid_of_comm(comm: str) -> int | None:
    """The first process whose comm is exactly comm (e.g. the kauditd kernel thread)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    return int(entry.name)
            except OSError:
                continue  # exited while we looked
    return None


@dataclass
class Child:
    """A started child and how to stop it politely."""

    name: str
    proc: subprocess.Popen[bytes]
    stop_signal: int
    # The storm forks workers that fork the execs: only killing its whole
    # process group stops them all.
    group: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        try:
            if self.group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass  # already gone

    def wait_exit_unreaped(self, timeout: float) -> bool:
        """Wait until the child has exited but leave it a zombie: True if it exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                return True
            try:
                if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:
                return True
            time.sleep(0.02)
        return False


class Children:
    """Every child the benchmark started and has not stopped yet."""

    def __init__(self) -> None:
        self._live: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stop_signal: int = signal.SIGTERM,
        group: bool = False,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout: IO[bytes] | int = subprocess.DEVNULL,
        stderr: IO[bytes] | int = subprocess.DEVNULL,
    ) -> Child:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        child = Child(name, proc, stop_signal, group)
        self._live.append(child)
        return child

    def stop(self, child: Child, timeout: float = 15.0) -> tuple[int | None, bool]:
        """Stop with its stop signal, SIGKILL after timeout: (exit status, stopped politely)."""
        polite = True
        if child.proc.poll() is None:
            child.signal(child.stop_signal)
            polite = child.wait_exit_unreaped(timeout)
            if not polite:
                child.signal(signal.SIGKILL)
        child.proc.wait()
        self.forget(child)
        return child.proc.returncode, polite

    def stop_measured(
        self, child: Child, timeout: float, measure: Callable[[], int]
    ) -> tuple[int | None, bool]:
        """stop(), calling measure() once the child exited but before it is reaped.

        Returns (measure()'s value, or None if the child had to be killed;
        stopped politely).
        """
        value = None
        child.signal(child.stop_signal)
        polite = child.wait_exit_unreaped(timeout)
        if polite:
            value = measure()
        else:
            child.signal(signal.SIGKILL)
        child.proc.wait()
        self.forget(child)
        return value, polite

    def forget(self, child: Child) -> None:
        if child in self._live:
            self._live.remove(child)

    def stop_all(self) -> None:
        """Storms first (they are what loads the machine), then the rest, newest first."""
        for child in [c for c in self._live if c.group]:
            self.stop(child, timeout=2.0)
        for child in reversed(list(self._live)):
            self.stop(child, timeout=10.0)


def run_checked(argv: Sequence[str]) -> str:
    """Run a short command; raise with its output if it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = result.stderr.strip() or result.stdout.strip()
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}: {output}")
    return result.stdout
