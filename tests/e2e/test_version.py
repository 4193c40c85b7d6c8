"""`otel-exec --version` (check.version_lines): the version, the backend `run`
would use and why, and what the kernel offers, from the probes `check` and
the backend choice make; nothing is loaded, so any user can run it. The
installed wheel's, as root and as nobody: tests/e2e/test_wheel.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_exec import __version__, check, cli
from otel_exec.bcc import toolchain
from otel_exec.config import Config
from otel_exec.core import libbpf, probes

ROOT = Path(__file__).resolve().parents[2]


def version(capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert cli.main(["--version"]) == 0
    return capsys.readouterr().out.splitlines()


def test_version_first_line_and_backend_with_btf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"")
    monkeypatch.setattr(probes, "VMLINUX_BTF", btf)
    lines = version(capsys)
    assert lines[0] == f"otel-exec {__version__}"
    assert lines[1] == f"backend: core (BTF at {btf})"


def test_version_without_btf_names_bcc_or_why_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "vmlinux"
    monkeypatch.setattr(probes, "VMLINUX_BTF", missing)
    monkeypatch.setattr(toolchain, "bcc_problem", lambda: None)
    assert list(check.version_lines(Config()))[1] == (
        f"backend: bcc (no kernel BTF ({missing}); BCC and this kernel's headers are installed)")
    monkeypatch.setattr(toolchain, "bcc_problem", lambda: "no bcc module")
    line = list(check.version_lines(Config()))[1]
    assert line.startswith(f"backend: none ({missing} does not exist: this kernel lacks BTF") and "no bcc module" in line


def test_version_names_a_chosen_backend() -> None:
    assert list(check.version_lines(Config(backend="core")))[1] == "backend: core (--backend core)"


def test_version_lists_the_kernel_features_check_reports() -> None:
    """The same lines as `otel-exec check`'s BTF results, one owner."""
    cfg = Config()
    lines = list(check.version_lines(cfg))
    for result in check.check_btf(cfg):
        assert f"{result.name}: {result.detail}" in lines


def test_version_without_libbpf_names_the_package_to_install() -> None:
    """The system's libbpf.so.1 missing (dlopen fails): --version still
    answers, with the packages that provide it; libbpf.version() raises the
    same message."""
    code = (
        "import ctypes, sys\n"
        "real = ctypes.CDLL\n"
        "class NoLibbpf(real):\n"
        "    def __init__(self, name, *a, **k):\n"
        "        if name == 'libbpf.so.1':\n"
        "            raise OSError('libbpf.so.1: cannot open shared object file: No such file or directory')\n"
        "        super().__init__(name, *a, **k)\n"
        "ctypes.CDLL = NoLibbpf\n"
        "from otel_exec import cli\n"
        "sys.exit(cli.main(['--version']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    (line,) = [l for l in done.stdout.splitlines() if l.startswith("libbpf: ")]
    assert line == ("libbpf: missing: cannot load libbpf.so.1 (libbpf.so.1: cannot open shared object file: "
                    f"No such file or directory): {libbpf.INSTALL_LIBBPF}")
    assert "apt-get install libbpf1 (Debian, Ubuntu)" in line and "dnf install libbpf (Fedora, RHEL)" in line
