"""The exec program at its bounds, both builds, real execs against ground
truth: --path-prefix decided on a walked path whose names are not stored in
their dentries (40 and 255 bytes) and on one deeper than the walk goes; and
interp when cmdpath is longer than a string the record holds."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from otel_exec.config import Config
from otel_exec.core.decode import Decoder
from otel_exec.model import layout
from otel_exec.model.events import ExecEvent
from tests.helpers.exec_builds import both_builds, draining
from tests.helpers.hostile import make_chain
from tests.helpers.proc_truth import IDENTITY

pytestmark = pytest.mark.kernel

TRUE = shutil.which("true") or "/bin/true"
NAME_40 = "a" * 40  # DNAME_INLINE_LEN is 40 (32 before 6.14): never inline
NAME_255 = "b" * 255
DEPTH_MAX = 64  # OE_PATH_DEPTH_MAX: the steps walked, leaf first
STR_MAX = 4096  # OE_STR_MAX, NUL included


def grandchild(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs argv from a shell: the program does not report the execs of the
    process that loaded it (the agent's own)."""
    return subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *argv], cwd=cwd, capture_output=True, text=True)


def marked_execs(records: list[bytes], mark: str) -> list[ExecEvent]:
    decoder = Decoder(IDENTITY)
    events = [decoder.decode(r) for r in records
              if layout.HEADER.unpack_from(r)[0] == layout.REC_EXEC and mark.encode() in r]
    return [ev for ev in events if isinstance(ev, ExecEvent)]


def test_path_prefix_through_long_names_and_past_the_walk_depth(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each exec's cmdpath (relative, or a symlink outside) matches no
    prefix: only the walked path decides."""
    long_dir = tmp_path / NAME_40 / NAME_255
    # Differing from long_dir in the last byte of the 40-byte name, and
    # early in the 255-byte one.
    other_40 = tmp_path / (NAME_40[:-1] + "z") / NAME_255
    other_255 = tmp_path / NAME_40 / ("b" * 100 + "c" * 155)
    deep = tmp_path.joinpath("deep", *(f"d{i}" for i in range(1, 71)))
    deep_other = tmp_path.joinpath("deep2", *(f"e{i}" for i in range(1, 71)))
    for d in (long_dir, other_40, other_255, deep, deep_other):
        d.mkdir(parents=True)
        shutil.copy(TRUE, d / "t")
    outside = tmp_path / "out"
    outside.mkdir()
    (outside / "via-long").symlink_to(long_dir / "t")
    (outside / "via-deep").symlink_to(deep / "t")

    long_prefix = str(long_dir)[:layout.PREFIX_LEN - 6]  # ends inside the 255-byte name
    assert len(long_prefix) > len(str(tmp_path)) + 1 + 40 + 1 + 100
    # The walk keeps t and the 63 directories above it: d8 to d70.
    deep_shown = "..." + "".join(f"/d{i}" for i in range(71 - DEPTH_MAX + 1, 71)) + "/t"
    deep_prefix = ".../d8/d9/"
    cfg = Config(path_prefix=[long_prefix, deep_prefix, ".../d7/", str(tmp_path / "deep")])
    mark = uuid.uuid4().hex
    runs = {"long-rel": (["./t"], long_dir), "long-link": ([str(outside / "via-long")], None),
            "other-40": (["./t"], other_40), "other-255": (["./t"], other_255),
            "deep-rel": (["./t"], deep), "deep-link": ([str(outside / "via-deep")], None),
            "deep-other": (["./t"], deep_other)}
    with both_builds(monkeypatch, cfg) as builds, draining([ring for _, ring in builds]) as got:
        for label, (argv, cwd) in runs.items():
            run = grandchild([*argv, label, mark], cwd)
            assert run.returncode == 0, run.stderr
        time.sleep(0.2)
        counters = [kp.counters() for kp, _ in builds]
    for build, counted, records in zip(("direct", "probed"), counters, got):
        kept = {ev.argv[1]: ev for ev in marked_execs(records, mark)}
        assert sorted(kept) == ["deep-link", "deep-rel", "long-link", "long-rel"], build
        for label in ("long-rel", "long-link"):
            assert kept[label].pathname == str(long_dir / "t")
        for label in ("deep-rel", "deep-link"):
            assert kept[label].pathname == deep_shown and "pathname" in kept[label].path_truncated
        assert counted["exec_filtered"] >= 3


EXECVEAT = r"""
import ctypes, os, sys
dirfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
path = sys.argv[2].encode()
argv = (ctypes.c_char_p * 4)(b"t", sys.argv[3].encode(), sys.argv[4].encode(), None)
envp = (ctypes.c_char_p * 1)(None)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall(322 if os.uname().machine == "x86_64" else 281, dirfd, path, argv, envp, 0)
sys.exit(f"execveat: {os.strerror(ctypes.get_errno())} ({len(path)} bytes)")
"""


def test_interp_equals_a_cmdpath_cut_at_its_bound(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """execveat(dirfd, relative path) makes the kernel's filename
    /dev/fd/N/<path>: with the longest relative path it takes (PATH_MAX
    less the NUL) that runs past what cmdpath holds, and interp, the same
    string, is cut alike."""
    os_path_max = os.pathconf("/", "PC_PATH_MAX")
    components = ["x" * 254] * 16
    leaf = "t" * (os_path_max - 1 - 255 * len(components))
    rel = "/".join([*components, leaf])
    assert len(rel) == os_path_max - 1
    _, fd = make_chain(tmp_path, [name.encode() for name in components], leaf.encode(), TRUE)
    os.close(fd)
    mark = uuid.uuid4().hex
    with both_builds(monkeypatch, Config()) as builds, draining([ring for _, ring in builds]) as got:
        run = grandchild([sys.executable, "-c", EXECVEAT, str(tmp_path), rel, "cut", mark])
        short = grandchild([sys.executable, "-c", EXECVEAT, str(tmp_path / components[0] / components[1]),
                            "/".join([*components[2:], leaf]), "whole", mark])
        time.sleep(0.2)
        counters = [kp.counters() for kp, _ in builds]
    assert run.returncode == 0 and short.returncode == 0, (run.stderr, short.stderr)
    for build, counted, records in zip(("direct", "probed"), counters, got):
        execs = {ev.argv[1]: ev for ev in marked_execs(records, mark) if ev.argv[0] == "t"}
        assert sorted(execs) == ["cut", "whole"], build
        cut, whole = execs["cut"], execs["whole"]
        dirfd = cut.cmdpath.split("/")[3]
        assert cut.cmdpath == f"/dev/fd/{dirfd}/{rel}"[:STR_MAX - 1]
        assert cut.interp == cut.cmdpath
        assert {"cmdpath", "interp"} <= set(cut.path_truncated)
        assert whole.interp == whole.cmdpath == f"/dev/fd/{whole.cmdpath.split('/')[3]}/" + \
            "/".join([*components[2:], leaf])
        assert not {"cmdpath", "interp"} & set(whole.path_truncated)
        assert counted["cut_string"] >= 2
