"""--output and --ready-file in a directory other users can write to (issue
10): what another user plants there (symlinks, hard links, files of their
own, a symlinked parent) never makes the root agent change a file it should
not. Each attack is planted for real, the agent runs for real, and the
victim, a root-owned file, is compared before and after.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from tests.helpers.agent_run import ROOT, AgentRun, marked, marked_env, new_mark, public_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.kernel

NOBODY = 65534
PRECIOUS = b"root's own data\n"


class Snapshot(NamedTuple):
    uid: int
    gid: int
    mode: int
    nlink: int
    content: bytes


def snapshot(path: Path) -> Snapshot:
    st = path.stat()
    return Snapshot(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_nlink, path.read_bytes())


@pytest.fixture
def victim() -> Iterator[Path]:
    """A root-owned 0644 file in a root-only directory, on the same file
    system as `public_dir` (so it can be hard-linked)."""
    d = Path(tempfile.mkdtemp(prefix="oe-victim-", dir="/tmp"))
    f = d / "victim"
    f.write_bytes(PRECIOUS)
    f.chmod(0o644)
    yield f
    shutil.rmtree(d, ignore_errors=True)


def plant_symlink(link: Path, target: Path) -> None:
    """A symlink as user nobody would make it."""
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otel_exec", "run", "--exporter", "console", "--format", "jsonl",
                           "--duration", "1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("otel-exec: error: ") and message in lines[0], proc.stderr


def test_output_symlink_to_a_root_file_is_refused(public_dir: Path, victim: Path) -> None:
    before = snapshot(victim)
    plant_symlink(public_dir / "events.jsonl", victim)
    refused(run_agent("--output", str(public_dir / "events.jsonl")), "events.jsonl: a symlink; not followed")
    assert snapshot(victim) == before


def test_output_hard_link_to_a_root_file_is_refused(public_dir: Path, victim: Path) -> None:
    """Where fs.protected_hardlinks is off, another user can link a file
    they cannot write; made here as root, which can do it anyway."""
    os.link(victim, public_dir / "events.jsonl")
    before = snapshot(victim)
    refused(run_agent("--output", str(public_dir / "events.jsonl")), "has 2 links")
    assert snapshot(victim) == before


def test_output_another_user_made_is_refused(public_dir: Path) -> None:
    """A file nobody made (and could read later) is not written into."""
    planted = public_dir / "events.jsonl"
    planted.write_bytes(b"mine\n")
    planted.chmod(0o666)
    os.chown(planted, NOBODY, NOBODY)
    before = snapshot(planted)
    refused(run_agent("--output", str(planted)), "owned by uid 65534")
    assert snapshot(planted) == before


def test_parent_symlinked_by_another_user_is_refused(public_dir: Path, victim: Path) -> None:
    """public_dir/dir -> the root-only directory of the victim, planted by
    nobody: neither file is created or written there."""
    plant_symlink(public_dir / "dir", victim.parent)
    before = sorted(os.listdir(victim.parent)), snapshot(victim)
    refused(run_agent("--output", str(public_dir / "dir" / "victim")), "a symlink owned by uid 65534; not followed")
    refused(run_agent("--output", str(public_dir / "out"), "--ready-file", str(public_dir / "dir" / "victim")),
            "a symlink owned by uid 65534; not followed")
    assert (sorted(os.listdir(victim.parent)), snapshot(victim)) == before


def test_ready_file_symlinks_are_replaced_not_followed(public_dir: Path, victim: Path, tmp_path: Path) -> None:
    """ready and ready.tmp (the temporary name earlier versions used) point
    at the victim: the ready file replaces the link, the victim stays."""
    plant_symlink(public_dir / "ready", victim)
    plant_symlink(public_dir / "ready.tmp", victim)
    before = snapshot(victim)
    proc = run_agent("--output", str(tmp_path / "out"), "--ready-file", str(public_dir / "ready"))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(victim) == before
    ready = public_dir / "ready"
    assert not ready.is_symlink() and ready.stat().st_uid == 0 and ready.read_text().strip().isdigit()
    assert sorted(p.name for p in public_dir.iterdir()) == ["ready", "ready.tmp"]  # no temporary file left


def test_output_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Records hold every user's argv and environment: 0600 under umask
    022, for a new file and for an existing one (which is truncated)."""
    existing = tmp_path / "existing.jsonl"
    existing.write_text("old line\n")
    existing.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        runs = [AgentRun(tmp_path / "new"), AgentRun(tmp_path / "old", "--output", str(existing))]
    finally:
        os.umask(old_umask)
    mark = new_mark()
    subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
    runs[0].one(marked(mark))
    for run in runs:
        rc, err = run.stop()
        assert rc == 0, err
    new = tmp_path / "new" / "events.jsonl"
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    text = existing.read_text()
    assert not text.startswith("old line") and mark in text


def test_a_trusted_symlink_through_dotdot_is_followed(tmp_path: Path) -> None:
    """A root-owned relative link such as Fedora's /var/run -> ../run leads
    where the kernel would go; the descriptors walked are all closed."""
    from otel_exec.host import safefs

    (tmp_path / "var").mkdir()
    (tmp_path / "run" / "otel-exec").mkdir(parents=True)
    (tmp_path / "var" / "run").symlink_to("../run")
    open_fds = len(os.listdir("/proc/self/fd"))
    dir_fd, name = safefs.split(str(tmp_path / "var" / "run" / "otel-exec" / "ready"))
    try:
        assert name == "ready"
        assert os.fstat(dir_fd).st_ino == (tmp_path / "run" / "otel-exec").stat().st_ino
        safefs.replace_file(dir_fd, name, b"1\n")
    finally:
        os.close(dir_fd)
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert os.listdir(tmp_path / "run" / "otel-exec") == ["ready"]
