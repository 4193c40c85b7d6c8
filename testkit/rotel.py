"""rotel, the real OTLP collector the tests and the benchmark run on loopback:
finding its binary, picking its ports, its environment and command line, and
knowing when it listens. tests/helpers/collector.py (records as received) and
bench/lib/rotel_collector.py (storm counts) each run it with their own
processor on top of this.

Install: ``pip install rotel==0.0.1a15`` (PyPI has only pre-releases; the
wheel ships the binary ``rotel/rotel-agent`` and no console script).
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Fresh port pairs to try when another process takes a picked port first.
PORT_ATTEMPTS = 5
# In rotel's log when a picked port was taken before it bound it.
PORT_TAKEN = "Address already in use"


def rotel_binary(python: Path | None = None) -> Path:
    """rotel-agent inside the installed ``rotel`` package: this interpreter's,
    else (when given) that of the interpreter `python`."""
    spec = importlib.util.find_spec("rotel")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).with_name("rotel-agent")
        if binary.exists():
            return binary
    if python is not None:
        code = "import importlib.util as u; s = u.find_spec('rotel'); print(s.origin if s and s.origin else '')"
        origin = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False).stdout.strip()
        if origin and Path(origin).with_name("rotel-agent").exists():
            return Path(origin).with_name("rotel-agent")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the rotel package is not installed (pip install rotel==0.0.1a15)")
    raise FileNotFoundError(f"the rotel package at {spec.origin} has no rotel-agent binary")


def free_port_pair() -> tuple[int, int]:
    """Two free loopback ports (gRPC, HTTP)."""
    # Both bound at once so that they differ. They are free again when rotel
    # binds them, so another process may take one first: callers retry.
    with socket.socket() as a, socket.socket() as b:
        a.bind((LOOPBACK, 0))
        b.bind((LOOPBACK, 0))
        return a.getsockname()[1], b.getsockname()[1]


def accepts(port: int, timeout: float) -> bool:
    """Whether something accepts a TCP connection on the loopback port."""
    try:
        socket.create_connection((LOOPBACK, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def rotel_env(**extra: str) -> dict[str, str]:
    """This process's environment for rotel, plus extra."""
    env = {
        key: value
        for key, value in os.environ.items()
        # ROTEL_* would change rotel's settings; PYTHONHOME/PYTHONPATH
        # would point its embedded system Python at another stdlib.
        if not key.startswith("ROTEL_") and key not in ("PYTHONHOME", "PYTHONPATH")
    }
    env["NO_COLOR"] = "1"  # rotel colours its log even into a file
    env.update(extra)
    return env


def rotel_argv(binary: Path, ports: tuple[int, int], *options: str) -> list[str]:
    """rotel in the foreground on the loopback ports (gRPC, HTTP), exporting
    to its blackhole, with further options (processors, debug logs)."""
    grpc_port, http_port = ports
    return [
        str(binary), "start",
        "--otlp-grpc-endpoint", f"{LOOPBACK}:{grpc_port}",
        "--otlp-http-endpoint", f"{LOOPBACK}:{http_port}",
        "--exporter", "blackhole",
        *options,
    ]
