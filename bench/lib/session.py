"""What every benchmark entry script shares: the repository and the agent's
interpreter, the progress line, the machine's description, the report file,
and the session around the measurements (signals, work directory, children)."""
from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Self

from lib.procs import Children
from lib.report import HEADER


REPO = Path(__file__).resolve().parents[2]


WORKERS = 2


# Above this 1-minute load average the machine is not idle enough to measure.
IDLE_LOAD = 0.5


def agent_python() -> Path:
    venv = REPO / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"bench [{time.monotonic() - _T0:6.1f}s]: {message}", flush=True)


def machine() -> str:
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_gb = int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024 / 1e9
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    python = subprocess.run([str(agent_python()), "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[0]
    return (f"Linux {platform.release()}, {os.cpu_count()} cores ({model}), {mem_gb:.1f} GB memory, "
            f"{python} (agent), load average {load} at start")


def load_average() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def section_head(title: str, about: str, command: str) -> list[str]:
    """The lines a report section starts with: its title, the machine
    (machine()) and the command that made it."""
    return [title, "", f"Machine: {about}.", "", "Command (as root, from the repository root):", "", f"    {command}", ""]


def append_report(path: Path, section: str) -> None:
    existing = path.read_text() if path.exists() else ""
    with path.open("a") as f:
        if not existing:
            f.write(HEADER)
        f.write("\n" + section)


def publish(output: Path, section: str, say: Callable[[str], None]) -> None:
    print()
    print(section)
    append_report(output, section)
    say(f"appended to {output}")


def _exit_on_signal(signum: int, _frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)


class Session:
    """What every benchmark script does around its measurements. SIGTERM and
    SIGHUP unwind like Ctrl-C, through the cleanup; SIGINT does too, even
    when started from a shell that ignores it for background jobs. A fresh
    work directory and the processes started for it (children) are all
    stopped at the end; the directory is removed if the run set ok, else
    kept and named after `kept`."""

    def __init__(self, prefix: str, kept: str) -> None:
        self._prefix = prefix
        self._kept = kept
        self.ok = False

    def __enter__(self) -> Self:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGHUP, _exit_on_signal)
        self.workdir = Path(tempfile.mkdtemp(prefix=self._prefix))
        self.children = Children()
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.children.stop_all()
        if self.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"{self._kept} {self.workdir}", file=sys.stderr)
