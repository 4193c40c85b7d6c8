"""An exec record the ring has no room for, whole, arrives cut rather than
lost: the kernel sends it again without its environment, then with its argv
cut too, each flagged truncated. Both builds of the exec program are loaded
in this process and their rings left undrained, filled to a measured level,
until the two big execs have run."""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from otel_exec.config import Config
from otel_exec.core.decode import Decoder
from otel_exec.core.ringbuf import RingBuffer
from otel_exec.model import layout
from otel_exec.model.events import ExecEvent
from tests.helpers.exec_builds import both_builds, draining
from tests.helpers.progs import Progs
from tests.helpers.proc_truth import IDENTITY, whole_prefix

pytestmark = pytest.mark.kernel

COMM = "oe_ringroom"  # --comm: the rest of the machine's execs never reach the rings
ARG = "a" * 99  # with its NUL, 100 bytes of the argv block
ARGS = 1000  # ~100 KiB of argv, as the benchmark's largest row
ENV_BYTES = 100 * 1024
# Room left in each ring before the big execs: more than a record without its
# environment (the argv and at most a few KiB of paths and fixed fields), less
# than one with it, and less than two without it, but more than one without
# it and one cut. Whatever is within SLACK of it does.
ROOM = ARGS * 100 + 50 * 1024
SLACK = 30 * 1024


def spawn(argv: list[str], env: dict[str, str]) -> int:
    """Runs argv from a shell (the program skips the execs of the process
    that loaded it, this one's) and returns its pid once it has exited."""
    run = subprocess.run(["sh", "-c", '"$@" & echo $!; wait $!', "sh", *argv], env=env, capture_output=True,
                         text=True, check=True)
    return int(run.stdout)


def room(rings: list[RingBuffer], size: int) -> int:
    return min(size - ring.available_bytes() for ring in rings)


def test_an_exec_the_full_ring_has_no_room_for_arrives_cut(monkeypatch: pytest.MonkeyPatch, progs: Progs,
                                                          tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    prog = str(bin_dir / COMM)
    shutil.copy2(progs.static_true, prog)
    mark = uuid.uuid4().hex
    small_env = {"PATH": "/usr/bin:/bin", "OE_TEST_MARK": mark}
    big_argv = [prog, mark, *([ARG] * ARGS)]
    big_env = dict(small_env, PAD="e" * ENV_BYTES)
    cfg = Config(comm=[COMM], argv_max_bytes=layout.ARGS_MAX, env_max_bytes=layout.ARGS_MAX)
    with both_builds(monkeypatch, cfg) as builds:
        rings = [ring for _, ring in builds]
        size = builds[0][0].ringbuf_bytes
        # Emptied together: from now on both take the same records.
        with draining(rings):
            pass
        fillers = 0
        # Records that fit whole, each at most as big as what is left above ROOM.
        while (over := room(rings, size) - ROOM) > SLACK:
            spawn([prog, "fill", "f" * min(over - 4096, ARGS * 100)], small_env)
            fillers += 1
        assert all(abs(size - ring.available_bytes() - ROOM) <= SLACK for ring in rings), \
            "the machine's exit records filled the rings meanwhile"
        pids = [spawn(big_argv, big_env) for _ in range(2)]
        with draining(rings) as got:
            pass
        time.sleep(0.1)
        counters = [kp.counters() for kp, _ in builds]
    for build, counted, records in zip(("direct", "probed"), counters, got):
        decoder = Decoder(IDENTITY)
        execs = [ev for ev in (decoder.decode(r) for r in records
                               if layout.HEADER.unpack_from(r)[0] == layout.REC_EXEC)
                 if isinstance(ev, ExecEvent) and ev.cmdpath == prog]
        filled = [ev for ev in execs if ev.argv[1] == "fill"]
        assert len(filled) == fillers, build
        # The shell adds PWD to what it passes on.
        assert all(f"OE_TEST_MARK={mark}" in ev.env and len(ev.env) == ev.envc == len(small_env) + 1
                   and not ev.env_truncated and not ev.argv_truncated for ev in filled), build
        big = [ev for ev in execs if ev.argv[1] == mark]
        assert [ev.host_pid for ev in big] == pids, build
        for ev in big:
            assert ev.pathname == prog and ev.comm == COMM, build
            assert (ev.argc, ev.envc) == (len(big_argv), len(big_env) + 1), build
            assert ev.env == [] and ev.env_truncated, build
        whole, cut = big
        assert whole.argv == big_argv and not whole.argv_truncated, build
        assert cut.argv == whole_prefix(big_argv, layout.ARGV_RING_FULL_MAX) and cut.argv_truncated, build
        assert len(cut.argv) > 2, build
        assert counted["cut_ring_full"] == 2, build
        assert counted["lost_exec_ringbuf_full"] == 0, build
        assert counted["cut_argv"] == counted["cut_env"] == 0, build
