"""`otel-exec install-systemd`: the systemd unit and the default
configuration file, shipped in the package (otel_exec/_systemd/), installed
on this host (docs/packaging.md#host-install).

The unit is the package's own and is replaced on every install (site changes
go in a drop-in, `systemctl edit otel-exec`); its ExecStart names the
otel-exec command of the installation that runs this. The configuration
file is the site's: it is created once, root's and 0600 as the loader
demands (config.read_config_file), and never overwritten."""
from __future__ import annotations

import os
import stat
import sys
from importlib import resources
from pathlib import Path
from typing import TextIO

from otel_exec.config import DEFAULT_CONFIG_FILE
from otel_exec.errors import UsageError
from otel_exec.host import safefs

UNIT_NAME = "otel-exec.service"
UNIT_DIR = "/etc/systemd/system"
# The command the packaged unit names; install-systemd puts the installed one in its place.
PACKAGED_COMMAND = "/usr/local/bin/otel-exec"


def packaged(name: str) -> bytes:
    """A file of otel_exec/_systemd/: the unit or the default configuration."""
    return (resources.files("otel_exec") / "_systemd" / name).read_bytes()


def installed_command() -> Path:
    """The otel-exec command next to this interpreter: the one of the
    installation (a venv, /usr/local) that is running install-systemd. The
    service runs it as root, so only root may be able to change it, the
    interpreter or the package."""
    command = Path(sys.executable).parent / "otel-exec"
    if not os.access(command, os.X_OK):
        raise UsageError(f"{command} does not exist: run install-systemd as the otel-exec command of the "
                         "installation the service should run, e.g. /opt/otel-exec/bin/otel-exec install-systemd")
    for path in (command, Path(os.path.realpath(sys.executable)), Path(__file__).resolve().parent):
        _check_only_root_can_change(path)
    return command


def _check_only_root_can_change(path: Path) -> None:
    """Every directory down to `path` checked as safefs checks the agent's
    own paths; `path` itself root's and writable by no one else."""
    os.close(safefs.open_dir(str(path.parent)))
    st = os.stat(path)
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise UsageError(f"{path}: owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}: a root service "
                         "must run only what root alone can change; install otel-exec as root (e.g. a venv in "
                         "/opt/otel-exec made by root)")


def unit_text(command: Path) -> bytes:
    unit = packaged(UNIT_NAME)
    start = f"ExecStart={PACKAGED_COMMAND} ".encode()
    if unit.count(start) != 1:
        raise AssertionError(f"the packaged unit has no single `{start.decode()}` line")
    return unit.replace(start, f"ExecStart={command} ".encode())


def _open_dir(root: Path, path: str) -> int:
    """A checked descriptor for `path` under `root`, made 0755 if missing."""
    return safefs.open_dir(str(root / path.lstrip("/")), create_mode=0o755)


def install_systemd(root: str, out: TextIO) -> int:
    """Writes the unit and, if there is none, the configuration file under
    `root` (/ for this host)."""
    if os.geteuid() != 0:
        raise UsageError("install-systemd writes root's files: run it as root (sudo)")
    top = Path(root).resolve()
    unit_path = top / UNIT_DIR.lstrip("/") / UNIT_NAME
    config_path = top / DEFAULT_CONFIG_FILE.lstrip("/")
    text = unit_text(installed_command())
    old_umask = os.umask(0o022)
    try:
        unit_dir = _open_dir(top, UNIT_DIR)
        try:
            safefs.replace_file(unit_dir, UNIT_NAME, text, 0o644)
        finally:
            os.close(unit_dir)
        print(f"wrote {unit_path} (0644)", file=out)
        config_dir = _open_dir(top, os.path.dirname(DEFAULT_CONFIG_FILE))
        try:
            fd = os.open(os.path.basename(DEFAULT_CONFIG_FILE),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=config_dir)
        except FileExistsError:
            print(f"kept {config_path}: it exists, and is never overwritten", file=out)
        else:
            try:
                os.write(fd, packaged("config.yaml"))
            finally:
                os.close(fd)
            print(f"wrote {config_path} (0600): the settings, docs/configuration.md", file=out)
        finally:
            os.close(config_dir)
    finally:
        os.umask(old_umask)
    if top == Path("/"):  # the agent starts no process (tests/static/test_no_shell.py): systemctl is the operator's
        print("next: systemctl daemon-reload && systemctl enable --now otel-exec", file=out)
    return 0
