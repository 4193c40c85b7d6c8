"""Every loss and cut counter made non-zero once through the real path, and
its value checked against ground truth in the final stderr line, the
--stats-interval line, the WARNING line and the metric at the collector.

The agent runs with `--comm` set to a name only this test's programs have,
so the execs of the rest of the machine are filtered in the kernel and never
reach the ring: what was lost or cut is exactly what this test ran minus
what arrived.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import pytest

from tests.helpers.agent_run import (MALFORMED_PREFIX, AgentRun, all_killed, kernel_available, marked, marked_env,
                                      new_mark, overflow_the_ring, stats_lines, stop_line, warning_line)
from tests.helpers.bpf_testprog import build
from tests.helpers.collector import Collector, last_value
from otel_exec.core.libbpf import BpfObject
from otel_exec.host import tracefs
from otel_exec.bcc.program import tracepoint_features
from otel_exec.export.telemetry import loss_reason
from tests.helpers.progs import Progs
from tests.helpers.bcc_env import bcc_env  # noqa: F401  (a fixture)

pytestmark = pytest.mark.kernel

SMALLEST_RING = 2 * 1024 * 1024  # config.validate's floor: a power of two holding several largest records


def unique_program(progs: Progs, tmp_path: Path, name: str) -> str:
    """A copy of a tiny static program under a comm nothing else on the machine has."""
    tmp_path.mkdir(mode=0o755)
    path = tmp_path / name
    shutil.copy2(progs.static_true, path)
    return str(path)


@contextmanager
def running_under(comm: str, directory: Path, count: int) -> Iterator[None]:
    """`count` processes of `comm` (copies of sleep by that name) running
    while the block runs: --comm reports them when the agent finds them at
    start, and they stay in its process table."""
    directory.mkdir(mode=0o755)
    path = directory / comm
    shutil.copy2(shutil.which("sleep") or "/usr/bin/sleep", path)
    with all_killed(*(subprocess.Popen([str(path), "120"]) for _ in range(count))):
        yield


def test_a_full_ring_counts_every_lost_exec_exactly_everywhere(make_collector, progs: Progs,
                                                              tmp_path: Path) -> None:
    """The agent is stopped (SIGSTOP) while execs with ~28 KiB of argv fill
    the smallest ring several times over: the kernel cuts what does not fit
    whole (cut_ring_full), drops what does not fit even cut, and counts it.
    lost_exec_ringbuf_full must equal the execs run minus the execs
    delivered, and say so on every channel."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    collector: Collector = make_collector()
    comm = "oe_ringfull"
    prog = unique_program(progs, tmp_path / "bin", comm)
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_BLRP_SCHEDULE_DELAY="100")
    # Found at start and kept in the table: its size is not 0 at the stop.
    with running_under(comm, tmp_path / "held", 1):
        run = AgentRun(tmp_path / "agent", "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                       "--comm", comm, "--ringbuf-bytes", str(SMALLEST_RING), "--stats-interval", "0.2", env=env)
        mark = new_mark()
        run.proc.send_signal(signal.SIGSTOP)
        try:
            argv, execs = overflow_the_ring(prog, mark)
            # A second exec since the fork, of a filtered image: the kernel
            # tries to tell user space that the shell's image ended, into a full ring.
            for _ in range(50):
                subprocess.run(["/bin/sh", "-c", "exec /bin/true"], env=marked_env(mark), check=True)
        finally:
            run.proc.send_signal(signal.SIGCONT)
        time.sleep(1.5)  # drained, a stats line and a metric export after it
        rc, err = run.stop()
    assert rc == 0, err
    # What the ring had no room for whole came cut, without its environment
    # (and so its mark), argv cut too unless what was left fitted.
    cut = [e for e in run.events if e.get("argv", [""])[0] == prog and not marked(mark)(e)]
    delivered = [e for e in run.events if marked(mark)(e)] + cut
    assert all(e["argv"] in (argv, [prog]) for e in delivered)
    assert all(e["env"] == [] and e["env_truncated"] for e in cut)
    counters = stop_line(err)
    assert counters["cut_ring_full"] == len(cut) > 0
    lost = execs - len(delivered)
    assert lost > 0, "the ring did not overflow"
    assert counters["lost_exec_ringbuf_full"] == lost
    assert counters["exported"] == len(delivered)  # nothing else passes --comm
    assert counters["lost_exit_ringbuf_full"] > 0  # the burst's own exits, among others
    assert counters["lost_unreported_ringbuf_full"] > 0
    warned = warning_line(err)
    assert warned["lost_exec_ringbuf_full"] == lost
    assert all(warned[k] == counters[k] for k in warned if k in counters)
    total_lost = sum(v for k, v in counters.items() if loss_reason(k))
    assert int(stats_lines(err)[-1]["lost"]) == total_lost
    dump = collector.output_path.read_text(errors="replace")
    assert last_value(dump, "otel_exec.lost", reason="exec_ringbuf_full") == lost
    assert last_value(dump, "otel_exec.lost", reason="exit_ringbuf_full") == counters["lost_exit_ringbuf_full"]
    assert last_value(dump, "otel_exec.lost", reason="unreported_ringbuf_full") == \
        counters["lost_unreported_ringbuf_full"]
    assert last_value(dump, "otel_exec.events", type="exec") == counters["exec_seen"] > execs
    assert last_value(dump, "otel_exec.events", type="exit") == counters["exits_seen"] > 0
    assert last_value(dump, "otel_exec.records.exported", signal="logs") == counters["logs_exported"] > 0
    assert last_value(dump, "otel_exec.process_table.size") == counters["process_table_size"] > 0


def test_cut_counters_count_each_cut_block(progs: Progs, tmp_path: Path) -> None:
    """argv and env over their bounds, each cut counted once per exec."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    comm = "oe_cuts"
    prog = unique_program(progs, tmp_path / "bin", comm)
    bound = 4096
    run = AgentRun(tmp_path / "agent", "--comm", comm, "--argv-max-bytes", str(bound),
                   "--env-max-bytes", str(bound))
    mark = new_mark()
    # argv block: NUL-terminated strings; the path and one argument of
    # bound - len(path) - 1 bytes fill it exactly, one more byte cuts it.
    fits = [prog, "a" * (bound - len(prog) - 2)]
    assert sum(len(a) + 1 for a in fits) == bound
    over = [prog, "a" * (bound - len(prog) - 1)]
    env = marked_env(mark)
    env_block = sum(len(f"{k}={v}") + 1 for k, v in env.items())
    env_over = dict(env, PAD="p" * (bound - env_block - len("PAD=")))  # one byte over
    assert sum(len(f"{k}={v}") + 1 for k, v in env_over.items()) == bound + 1
    for argv, e in [(fits, env), (fits, env), (over, env), (over, env), (over, env), (fits, env_over)]:
        subprocess.run(argv, env=e, check=True)
    got = run.find(marked(mark), 6)
    rc, err = run.stop()
    assert rc == 0, err
    assert len(got) == 6
    counters = stop_line(err)
    assert counters["cut_argv"] == 3
    assert counters["cut_env"] == 1
    assert sum(e["argv_truncated"] for e in got) == 3 and sum(e["env_truncated"] for e in got) == 1
    assert counters["exported"] == 6 and counters["lost_exec_ringbuf_full"] == 0
    assert "WARNING" not in err  # cuts are not losses


def test_records_straddling_the_ring_s_end_arrive_whole(progs: Progs, tmp_path: Path) -> None:
    """The ring's data area is mapped once (otel_exec/core/ringbuf.py): a record
    that crosses its end is copied together from both ends. 256 execs of
    ~30 KiB records (argv numbered per exec) pass through the smallest ring
    about four times; every crossing of the end falls inside a record unless
    a record starts exactly there (one 8-byte position of ~30 KiB), so
    nearly every crossing is a straddling exec record of this test. Every
    exec must arrive once, with its own argv, and nothing counted lost or
    malformed. The test waits for each round of 8 execs (~250 KiB, under the
    ring's wake-up quarter) so the ring never fills."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    comm = "oe_wrap"
    prog = unique_program(progs, tmp_path / "bin", comm)
    run = AgentRun(tmp_path / "agent", "--comm", comm, "--ringbuf-bytes", str(SMALLEST_RING))
    mark = new_mark()
    rounds, per_round = 32, 8
    expected: list[list[str]] = []
    for r in range(rounds):
        for i in range(per_round):
            n = r * per_round + i
            argv = [prog, f"exec-{n}", *(f"{n % 10}" * 3700 for _ in range(8))]
            subprocess.run(argv, env=marked_env(mark), check=True)
            expected.append(argv)
        got = run.find(marked(mark), len(expected), timeout=20)
        assert len(got) == len(expected), f"round {r}: {len(got)} of {len(expected)} arrived"
    rc, err = run.stop()
    assert rc == 0, err
    got = [e for e in run.events if marked(mark)(e)]
    assert [e["argv"] for e in got] == expected
    assert not any(e["argv_truncated"] or e["env_truncated"] for e in got)
    counters = stop_line(err)
    assert counters["decode_errors"] == 0
    assert all(v == 0 for k, v in counters.items() if k.startswith("lost_")), counters
    ring_bytes = sum(len("\0".join(a)) for a in expected)
    assert ring_bytes > 3 * SMALLEST_RING  # the ring's end was crossed at least 3 times


def test_path_and_string_cuts_are_counted_once_per_cut_string(progs: Progs, tmp_path: Path) -> None:
    """cut_path: a program 70 directories deep (the walk stops at 64
    components) is cut once per exec, in pathname only (stdin, the working
    directory and the cgroup are shallow). cut_string: execveat() from a
    directory fd with a 4,090-byte relative name makes the kernel's filename
    "/dev/fd/N/<name>", over OE_STR_MAX (4,096 with its NUL); an ELF's interp
    is that same filename, so cmdpath and interp are cut: two per exec."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    comm = "oe_pathcut"
    deep = tmp_path / "bin"
    deep.mkdir(mode=0o755)
    for _ in range(70):
        deep = deep / "d"
        deep.mkdir(mode=0o755)
    prog = deep / comm
    shutil.copy2(progs.static_true, prog)
    run = AgentRun(tmp_path / "agent", "--comm", comm)
    mark = new_mark()
    deep_execs, fd_execs = 3, 2
    for _ in range(deep_execs):
        subprocess.run([str(prog)], env=marked_env(mark), stdin=subprocess.DEVNULL, cwd="/", check=True)
    rel = "./" * ((4090 - len(comm)) // 2) + comm
    assert len(rel) >= 4089
    execveat = ("import ctypes, os, sys\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "fd = os.open(sys.argv[1], os.O_PATH | os.O_DIRECTORY)\n"
                "argv = (ctypes.c_char_p * 2)(sys.argv[3].encode(), None)\n"
                "envp = (ctypes.c_char_p * 3)(b'OE_TEST_MARK=' + sys.argv[4].encode(), b'PATH=/bin', None)\n"
                "libc.syscall(int(sys.argv[5]), fd, sys.argv[2].encode(), argv, envp, 0)\n"
                "sys.exit(f'execveat: {os.strerror(ctypes.get_errno())}')\n")
    nr_execveat = {"x86_64": 322, "aarch64": 281}[os.uname().machine]
    for _ in range(fd_execs):
        subprocess.run([sys.executable, "-c", execveat, str(deep), rel, comm, mark, str(nr_execveat)],
                       stdin=subprocess.DEVNULL, cwd="/", check=True)
    got = run.find(marked(mark), deep_execs + fd_execs)
    rc, err = run.stop()
    assert rc == 0, err
    assert len(got) == deep_execs + fd_execs
    counters = stop_line(err)
    assert counters["cut_path"] == deep_execs + fd_execs  # the fd execs run the same deep file
    assert counters["cut_string"] == 2 * fd_execs
    assert [sorted(e["path_truncated"]) for e in got] == \
        [["pathname"]] * deep_execs + [["cmdpath", "interp", "pathname"]] * fd_execs
    assert all(e["pathname"].endswith("/d/d/" + comm) for e in got)
    assert all(e["argv_truncated"] is False for e in got)
    assert "WARNING" not in err  # cuts are not losses


def _dead_endpoint() -> str:
    """A loopback port nobody listens on (bound, then closed again: refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _wait_for_stats(run: AgentRun, ready: Callable[[dict[str, str]], bool], after: int = 0,
                    timeout: float = 30) -> dict[str, str]:
    """The first --stats-interval line, of those after the first `after`,
    for which ready() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [s for s in stats_lines(run.err.read_text())[after:] if ready(s)]
        if hits:
            return hits[0]
        time.sleep(0.05)
    raise AssertionError(f"no stats line matched; agent stderr: {run.err.read_text()[-2000:]}")


def test_without_spool_a_dead_collector_s_losses_add_up_to_the_execs(make_collector, progs: Progs,
                                                                      tmp_path: Path) -> None:
    """--no-spool, logs to a port nobody listens on, a queue of 10. At start
    the agent seeds a log record per running process --comm selects (12
    started before it): 10 fill the queue, the rest overflow, and the exporter takes
    the 10 as one batch and holds it for retries (it takes nothing else
    while it holds one). Then this test's 41 execs fill the emptied queue
    (10) and overflow it (31). At stop the held batch is failed and the
    queue unsent: failed = 10, unsent = 10, and the overflow grew by
    exactly 31 over the execs. Spans and metrics go to the collector,
    which shows the same counts."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    collector: Collector = make_collector()
    comm = "oe_nospool"
    prog = unique_program(progs, tmp_path / "bin", comm)
    queue, execs = 10, 41
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_BLRP_SCHEDULE_DELAY="100",
               OTEL_BLRP_MAX_QUEUE_SIZE=str(queue), OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=_dead_endpoint(),
               OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.grpc_endpoint,
               OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=collector.grpc_endpoint)
    # No exit records: the log queue then holds exec records only, as the counts below expect.
    with running_under(comm, tmp_path / "held", queue + 2):
        run = AgentRun(tmp_path / "agent", "--exporter", "otlp,console", "--comm", comm, "--no-spool",
                       "--no-exit-records", "--stats-interval", "0.1", env=env)
    mark = new_mark()
    try:
        # The seeded batch is held: only this test's execs add records now.
        seeded_overflow = int(_wait_for_stats(run, lambda s: int(s["export_retries"]) >= 1)["lost"])
        subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {execs} ]; do {prog}; i=$((i+1)); done"],
                       env=marked_env(mark), check=True)
        overflow = seeded_overflow + execs - queue
        shown = _wait_for_stats(run, lambda s: int(s["lost"]) >= overflow)
        assert int(shown["lost"]) == overflow and int(shown["exported_logs"]) == 0
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert len([e for e in run.events if marked(mark)(e)]) == execs
    counters = stop_line(err)
    assert counters["exported"] == execs  # the console got them all: nothing else passed --comm
    assert counters["logs_exported"] == 0
    assert counters["logs_failed"] == queue
    assert counters["logs_unsent"] == queue
    assert counters["logs_queue_overflow"] == overflow
    assert counters["traces_failed"] == counters["traces_queue_overflow"] == counters["traces_unsent"] == 0
    warned = warning_line(err)
    assert (warned["logs_failed"], warned["logs_unsent"], warned["logs_queue_overflow"]) == (queue, queue, overflow)
    dump = collector.output_path.read_text(errors="replace")
    assert last_value(dump, "otel_exec.lost", reason="logs_failed") == queue
    assert last_value(dump, "otel_exec.lost", reason="logs_queue_overflow") == overflow
    assert last_value(dump, "otel_exec.export.retries", signal="logs") == counters["logs_export_retries"] >= 1
    assert last_value(dump, "otel_exec.records.exported", signal="logs") == 0


def _spooled_records(spool: Path, signal: str) -> list[bytes]:
    """The records in a signal's segment files (a 4-byte length before each)."""
    records = []
    for seg in sorted(spool.glob(f"{signal}-*.seg")):
        data = seg.read_bytes()
        pos = 0
        while pos + 4 <= len(data):
            n = int.from_bytes(data[pos:pos + 4], "little")
            records.append(data[pos + 4:pos + 4 + n])
            pos += 4 + n
    return records


def test_a_full_spool_evicts_its_oldest_segments_and_counts_their_records(make_collector, progs: Progs,
                                                                          tmp_path: Path) -> None:
    """Logs to a port nobody listens on, the smallest spool (16 MiB, 12 MiB
    of it for logs): ~28 MiB of exec records (~28 KiB of environment each,
    which spans do not carry) make it delete its oldest 4 MiB segments.
    Nothing is ever sent, so every record written is either still in a
    segment file after the stop or evicted: logs_spool_evicted = the seeded
    records (of the processes --comm selects found at start, on disk before
    the execs) + the execs delivered − the records
    left, exactly; the seeded ones, written first, are all gone."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    collector: Collector = make_collector()
    comm = "oe_evict"
    prog = unique_program(progs, tmp_path / "bin", comm)
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=_dead_endpoint(),
               OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.grpc_endpoint,
               OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=collector.grpc_endpoint)
    # No exit records: the logs spool then holds exec records only, as the counts below expect.
    with running_under(comm, tmp_path / "held", 3):
        run = AgentRun(tmp_path / "agent", "--exporter", "otlp,console", "--comm", comm, "--no-exit-records",
                       "--spool-max-bytes", str(16 << 20), "--stats-interval", "0.1", env=env)
    mark = new_mark()
    try:
        seeded = len(_spooled_records(run.spool, "logs"))  # written before the agent said it was ready
        assert seeded > 0
        big_env = marked_env(mark, **{f"PAD{i}": f"{i}" * 4000 for i in range(7)})
        rounds, per_round = 20, 50  # ~28 MiB; each round waited for, so the ring never fills
        for r in range(rounds):
            subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {per_round} ]; do {prog}; i=$((i+1)); done"],
                           env=big_env, check=True)
            run.find(marked(mark), (r + 1) * per_round, timeout=30)
        execs = len([e for e in run.events if marked(mark)(e)])
        assert execs == rounds * per_round
        # Stats lines begun after the last record was seen: its drain, and
        # the spool writes at its end, are over.
        printed = len(stats_lines(run.err.read_text()))
        _wait_for_stats(run, lambda s: True, after=printed + 1)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    left = _spooled_records(run.spool, "logs")
    assert all(mark.encode() in r for r in left), "a seeded record outlived the eviction"
    evicted = seeded + execs - len(left)
    assert 0 < evicted < seeded + execs
    counters = stop_line(err)
    assert counters["logs_spool_evicted"] == evicted
    assert counters["traces_spool_evicted"] == 0 and counters["lost_exec_ringbuf_full"] == 0
    assert counters["logs_exported"] == 0 and counters["cut_env"] == 0
    assert counters["logs_spool_bytes"] == sum(4 + len(r) for r in left) <= 12 << 20
    assert warning_line(err)["logs_spool_evicted"] == evicted
    assert int(stats_lines(err)[-1]["lost"]) == evicted
    dump = collector.output_path.read_text(errors="replace")
    assert last_value(dump, "otel_exec.lost", reason="logs_spool_evicted") == evicted
    assert last_value(dump, "otel_exec.spool.size", signal="logs") == counters["logs_spool_bytes"]


@pytest.mark.needs_bcc
def test_the_bcc_backend_counts_every_lost_exec_exactly(bcc_env: dict[str, str], make_collector, progs: Progs,
                                                       tmp_path: Path) -> None:
    """The BCC backend's own ring (per exec an ARGS record at the syscall's
    entry, a PREP record where the kernel has sched_prepare_exec, the EXEC
    record, and the exit's) filled while the agent is stopped, as in the
    CO-RE test above. An exec whose EXEC record fit arrives (without argv
    and env when its ARGS did not fit: found by its comm, not by the mark
    in its environment): lost_exec_ringbuf_full = execs run − execs
    delivered, exactly; the other records of the burst are counted lost
    too, on every channel."""
    collector: Collector = make_collector()
    comm = "oe_bccfull"
    prog = unique_program(progs, tmp_path / "bin", comm)
    env = dict(bcc_env, OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_BLRP_SCHEDULE_DELAY="100")
    run = AgentRun(tmp_path / "agent", "--backend", "bcc", "--exporter", "otlp,console",
                   "--endpoint", collector.grpc_endpoint, "--comm", comm, "--ringbuf-bytes", str(SMALLEST_RING),
                   "--stats-interval", "0.2", env=env)
    mark = new_mark()
    run.proc.send_signal(signal.SIGSTOP)
    try:
        argv, execs = overflow_the_ring(prog, mark)
    finally:
        printed = len(stats_lines(run.err.read_text()))  # none while stopped
        run.proc.send_signal(signal.SIGCONT)
    # Stats lines begun after the agent ran again and drained the ring.
    _wait_for_stats(run, lambda s: s["ringbuf"] == "0B", after=printed)
    printed = len(stats_lines(run.err.read_text()))
    _wait_for_stats(run, lambda s: True, after=printed + 1)
    rc, err = run.stop()
    assert rc == 0, err
    delivered = [e for e in run.events if e["comm"] == comm]
    assert all(e["argv"] in (argv, [prog]) for e in delivered if marked(mark)(e))
    counters = stop_line(err)
    assert counters["exec_seen"] - counters["exec_filtered"] == execs  # the kernel saw each exec of the test
    lost = execs - len(delivered)
    assert lost > 0, "the ring did not overflow"
    assert counters["lost_exec_ringbuf_full"] == lost
    assert counters["exported"] == len(delivered)
    ring_losses = ["lost_args_ringbuf_full", "lost_exit_ringbuf_full"]
    if tracepoint_features(tracefs.ensure_tracefs(), set())["SCHED_PREPARE_EXEC"]:
        ring_losses.append("lost_prep_ringbuf_full")
    assert all(counters[k] > 0 for k in ring_losses), counters
    warned = warning_line(err)
    assert warned["lost_exec_ringbuf_full"] == lost
    assert all(warned[k] == counters[k] for k in ring_losses)
    total_lost = sum(v for k, v in counters.items() if loss_reason(k))
    assert int(stats_lines(err)[-1]["lost"]) == total_lost
    dump = collector.output_path.read_text(errors="replace")
    for key in ["lost_exec_ringbuf_full", *ring_losses]:
        assert last_value(dump, "otel_exec.lost", reason=key.removeprefix("lost_")) == counters[key]


# Writes a malformed record into the ring map it is given (the agent's
# "events", through bpf_map__reuse_fd) for each exec of a child of
# target_tgid; the n-th exec's record is malformed in the n % 4-th way.
MALFORMED_PROG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
__u64 seq;
__u64 failed;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);  /* set to the agent's size */
} events SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p)
{
	__u32 rec[4] = {};  /* type, size, boot_ns */
	long err;

	if (BPF_CORE_READ(p, real_parent, tgid) != target_tgid)
		return 0;
	switch (__sync_fetch_and_add(&seq, 1) % 4) {
	case 0:  /* shorter than a header */
		rec[0] = 1; rec[1] = 8;
		err = bpf_ringbuf_output(&events, rec, 8, 0);
		break;
	case 1:  /* a type the agent does not know */
		rec[0] = 99; rec[1] = 16;
		err = bpf_ringbuf_output(&events, rec, 16, 0);
		break;
	case 2:  /* says more bytes than it has */
		rec[0] = 1; rec[1] = 24;
		err = bpf_ringbuf_output(&events, rec, 16, 0);
		break;
	default:  /* an exec record of a header only */
		rec[0] = 1; rec[1] = 16;
		err = bpf_ringbuf_output(&events, rec, 16, 0);
	}
	if (err)
		__sync_fetch_and_add(&failed, 1);
	return 0;
}
"""
BPF_MAP_TYPE_RINGBUF = 27
SYS_PIDFD_GETFD = 438


def ring_fd_of(pid: int, name: str) -> int:
    """A descriptor of process pid's ring buffer map `name` (pidfd_getfd)."""
    rings: dict[int, int] = {}  # map id -> one of pid's descriptors of it
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        info = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                    if ":\t" in line)
        if info.get("map_type") == str(BPF_MAP_TYPE_RINGBUF):
            rings[int(info["map_id"])] = int(fd)
    named = [fd for map_id, fd in rings.items()
             if json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(map_id)], check=True,
                                          capture_output=True, text=True).stdout)["name"] == name]
    assert len(named) == 1, (rings, named)
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, named[0], 0)
        assert fd >= 0, os.strerror(ctypes.get_errno())
        return fd
    finally:
        os.close(pidfd)


def test_malformed_records_in_the_agent_s_ring_are_counted_and_dropped(
        make_collector, progs: Progs, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A BPF program of the test writes four kinds of malformed record into
    the agent's own ring (the map shared by descriptor), once per exec of a
    child of this test: the agent drops each one, says so on stderr, counts
    it in decode_errors exactly, and carries on with the well-formed
    records around them."""
    obj_path = build(tmp_path_factory.mktemp("malformed"), "oe_malformed", MALFORMED_PROG)
    collector: Collector = make_collector()
    comm = "oe_malformed"
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="300")
    run = AgentRun(tmp_path / "agent", "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                   "--comm", comm, "--ringbuf-bytes", str(SMALLEST_RING), "--stats-interval", "0.1", env=env)
    ring = ring_fd_of(run.proc.pid, "events")
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)  # its own handle: the agent's prototypes stay as they are
    libbpf.bpf_object__find_map_by_name.restype = ctypes.c_void_p
    libbpf.bpf_object__find_map_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libbpf.bpf_map__reuse_fd.argtypes = [ctypes.c_void_p, ctypes.c_int]
    mark = new_mark()
    malformed = 8
    try:
        with BpfObject(str(obj_path)) as obj:
            obj.set_max_entries("events", SMALLEST_RING)
            obj.set_rodata(struct.pack("=I", os.getpid()))
            events = libbpf.bpf_object__find_map_by_name(obj._handle(), b"events")
            assert libbpf.bpf_map__reuse_fd(events, ring) == 0
            obj.load()
            obj.attach_all()
            for _ in range(malformed):
                subprocess.run(["/bin/true"], env=marked_env(mark), check=True)  # filtered: only the test's record
            obj.detach_all()
        shown = _wait_for_stats(run, lambda s: int(s["lost"]) >= malformed)
        assert int(shown["lost"]) == malformed
        prog = unique_program(progs, tmp_path / "bin", comm)
        subprocess.run([prog], env=marked_env(mark), check=True)
        after = run.one(marked(mark))  # the agent goes on
        assert after["comm"] == comm
    finally:
        os.close(ring)
        rc, err = run.stop()
    assert rc == 0, err
    assert err.count(MALFORMED_PREFIX) == malformed
    for why in ("shorter than its header", "unknown record type 99", "record says 24 bytes, 16 were read",
                "exec record of 16 bytes"):
        assert err.count(why) == malformed // 4, why
    counters = stop_line(err)
    assert counters["decode_errors"] == malformed
    assert warning_line(err)["decode_errors"] == malformed
    assert int(stats_lines(err)[-1]["lost"]) == malformed
    dump = collector.output_path.read_text(errors="replace")
    assert last_value(dump, "otel_exec.lost", reason="decode_errors") == malformed


@pytest.mark.needs_bcc
def test_the_bcc_backend_counts_argv_it_could_not_read(bcc_env: dict[str, str], progs: Progs,
                                                       tmp_path: Path) -> None:
    """BCC reads argv from the calling process at the syscall's entry, where
    BPF cannot fault a page in: an argument in a mapped page nothing has
    touched yet is unreadable there (execve itself faults it in and runs
    the program with an empty argument). One read_error per exec; the exec
    still arrives, its environment read."""
    comm = "oe_unreadable"
    prog = unique_program(progs, tmp_path / "bin", comm)
    run = AgentRun(tmp_path / "agent", "--backend", "bcc", "--comm", comm, env=bcc_env)
    mark = new_mark()
    untouched = ("import ctypes, mmap, os, sys\n"
                 "page = mmap.mmap(-1, mmap.PAGESIZE)  # never read or written here\n"
                 "arg = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
                 "argv = (ctypes.c_char_p * 3)(sys.argv[1].encode(), arg, None)\n"
                 "envp = (ctypes.c_char_p * 2)(b'OE_TEST_MARK=' + sys.argv[2].encode(), None)\n"
                 "libc = ctypes.CDLL(None, use_errno=True)\n"
                 "libc.execve(sys.argv[1].encode(), argv, envp)\n"
                 "sys.exit(f'execve: {os.strerror(ctypes.get_errno())}')\n")
    execs = 3
    for _ in range(execs):
        subprocess.run([sys.executable, "-c", untouched, prog, mark], stdin=subprocess.DEVNULL, check=True)
    got = run.find(marked(mark), execs)
    rc, err = run.stop()
    assert rc == 0, err
    assert len(got) == execs and all(e["comm"] == comm for e in got)
    # argv from /proc while the process lived, else unavailable: never a guess.
    assert all(e["argv"] == [prog, ""] or "argv" in e["unavailable"] for e in got)
    counters = stop_line(err)
    assert counters["read_error"] == execs
    assert "WARNING" not in err  # nothing lost: the exec arrived
