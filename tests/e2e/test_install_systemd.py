"""`otel-exec install-systemd` (otel_exec/install.py) into a scratch root: the
packaged unit with ExecStart naming this installation's command, accepted by
`systemd-analyze verify`; the default configuration root's and 0600, loaded by
the agent's own loader, and never overwritten."""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from otel_exec import cli, install
from otel_exec.config import DEFAULT_CONFIG_FILE, parse_layered, read_config_file
from otel_exec.errors import UsageError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install-systemd writes root's files: needs root")

COMMAND = Path(sys.executable).parent / "otel-exec"


def paths(root: Path) -> tuple[Path, Path]:
    return root / "etc/systemd/system/otel-exec.service", root / DEFAULT_CONFIG_FILE.lstrip("/")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install systemd (scripts/otel-exec-dev test installs it)"
    return found


def test_install_writes_the_unit_and_the_default_config(tmp_path: Path) -> None:
    out = io.StringIO()
    assert install.install_systemd(str(tmp_path), out) == 0
    unit, config = paths(tmp_path)
    assert unit.read_bytes() == install.packaged("otel-exec.service").replace(
        b"ExecStart=/usr/local/bin/otel-exec ", f"ExecStart={COMMAND} ".encode())
    assert config.read_bytes() == install.packaged("config.yaml")
    for path, mode in ((unit, 0o644), (config, 0o600)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode), path
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o755
    assert out.getvalue().splitlines() == [f"wrote {unit} (0644)",
                                           f"wrote {config} (0600): the settings, docs/configuration.md"]


def test_installed_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    install.install_systemd(str(tmp_path), io.StringIO())
    unit, _ = paths(tmp_path)
    done = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_systemd_analyze_verify_does_fail_a_broken_unit(tmp_path: Path) -> None:
    """What the test above relies on: verify rejects a unit whose command is missing."""
    install.install_systemd(str(tmp_path), io.StringIO())
    unit, _ = paths(tmp_path)
    unit.write_text(unit.read_text().replace(f"ExecStart={COMMAND} ", "ExecStart=/nonexistent/otel-exec "))
    done = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "/nonexistent/otel-exec" in done.stderr


def test_installed_config_is_what_the_agent_loads(tmp_path: Path) -> None:
    install.install_systemd(str(tmp_path), io.StringIO())
    _, config = paths(tmp_path)
    args = parse_layered(cli.build_parser(), ["run", "--config", str(config)], {})
    cfg = cli.config_from_args(args)
    assert cfg.exporters == ("otlp",) and cfg.endpoint == "http://localhost:4317"
    assert read_config_file(str(config))["env_capture"] == "redacted"


def test_reinstall_keeps_the_config_and_replaces_the_unit(tmp_path: Path) -> None:
    install.install_systemd(str(tmp_path), io.StringIO())
    unit, config = paths(tmp_path)
    config.write_text("endpoint: https://collector.example.net:4317\n")
    config.chmod(0o644)
    unit.write_text("[Unit]\nDescription=edited\n")
    out = io.StringIO()
    install.install_systemd(str(tmp_path), out)
    assert config.read_text() == "endpoint: https://collector.example.net:4317\n"
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert f"kept {config}: it exists, and is never overwritten" in out.getvalue()
    assert b"ProtectSystem=strict" in unit.read_bytes()


def test_a_planted_symlink_is_not_written_through(tmp_path: Path) -> None:
    _, config = paths(tmp_path)
    config.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    config.symlink_to(target)
    install.install_systemd(str(tmp_path), io.StringIO())
    assert not target.exists() and config.is_symlink()


def test_install_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir(mode=0o777)
    (tmp_path / "etc").chmod(0o777)
    with pytest.raises(UsageError, match="writable by other users"):
        install.install_systemd(str(tmp_path), io.StringIO())


def test_install_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="run it as root"):
        install.install_systemd(str(tmp_path), io.StringIO())
    assert not (tmp_path / "etc").exists()


def test_cli_install_systemd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["install-systemd", "--root", str(tmp_path)]) == 0
    assert paths(tmp_path)[0].exists() and "wrote" in capsys.readouterr().out


def test_install_refuses_an_installation_others_can_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit would run, as root, a command another user can replace."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(os.path.realpath(sys.executable))
    shutil.copy2(COMMAND, bin_dir / "otel-exec")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert install.installed_command() == bin_dir / "otel-exec"
    (bin_dir / "otel-exec").chmod(0o777)
    with pytest.raises(UsageError, match="otel-exec: owned by uid 0, mode 0777: a root service must run only"):
        install.install_systemd(str(tmp_path / "root"), io.StringIO())
    (bin_dir / "otel-exec").chmod(0o755)
    bin_dir.chmod(0o777)
    with pytest.raises(UsageError, match="writable by other users"):
        install.install_systemd(str(tmp_path / "root"), io.StringIO())
    assert not (tmp_path / "root").exists()
