#!/usr/bin/env python3
"""otel-exec's reliability benchmark (issue 5, "Acceptance"), in one command: run as root.

    python3 bench/reliability.py [--quick] [--only {outage,kill,soak,diskfull,reject}] [--output FILE]
                                 [--outage-seconds S] [--soak-seconds S]

Each check on loopback, with its own rotel collector (counting which storm
execs arrived, by exec id, so duplicates count once) and its own fresh
--spool-dir:
  1. outage: a storm of /bin/true at 500 execs/s; 10 s in, the collector is
     stopped for 60 s (--quick: 10 s), then started again on the same ports;
     the storm goes on 20 s after that. Every exec must arrive, and no loss
     counter (kernel ring buffer, queue, spool eviction, ...) may be non-zero.
  2. kill: a storm of 20,000 unthrottled execs; the agent (OTLP and a JSON
     Lines console file) is SIGKILLed 2 s in, a process is started while no
     agent runs, and after the storm a new agent starts on the same spool.
     Every storm exec the first agent had printed must arrive, and so must
     every one in its spool's segment files after the kill; the restart
     must emit one otel_exec.agent.gap record covering the kill and
     otel_exec.process.observed records (including the process started
     while no agent ran).
  3. soak: 10 minutes (--quick: 60 s) at 1,000 execs/s, the agent's VmRSS
     sampled every 10 s: RSS at the end within 10% of RSS at the 1-minute
     mark (--quick: the 30 s mark); every exec arrives, no loss counter.
  4. diskfull: the spool on a 256 KiB tmpfs; a storm at 1,000 execs/s for
     20 s; from 5 s to 15 s the tmpfs is full (a ballast file) and the
     collector down, so records beyond the 8 MiB memory window are dropped
     (--spool-full-action drop-oldest, the default). The agent must keep
     running, every exec of a second storm (100/s) after space and
     collector returned and the agent drained must arrive, and every exec record the agent made must be
     delivered or counted: exported = delivered + dropped.
  5. reject: a storm of 5,000 execs at 500/s against a collector
     (bench/rejecting_collector.py) that, per signal, refuses every tenth
     request for good (INVALID_ARGUMENT), answers another UNAVAILABLE
     (retryable) and accepts another but for its last record (partial
     success). Every storm exec must be delivered or counted as rejected,
     and the agent's logs_rejected, logs_export_retries and logs_exported
     must equal what the collector refused, answered retryably and took.
Then it prints a table and appends it to BENCHMARKS.md. Every process it
started is stopped on exit, error or Ctrl-C; the work directory (spools,
logs) is removed when every check passed, else kept and named.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lib.losses import loss_counters, losses_text
from lib.oe_agent import STATS_PREFIX, AgentProcess
from lib.procs import Child, Children, kb_to_mb
from lib.rotel_collector import Rotel
from lib.session import IDLE_LOAD, REPO, Session, agent_python, load_average, machine, publish, section_head
from lib.storm import MARKER_KEY, MARKER_VAR, Storm
from otel_exec.export.otlp import protowire
from testkit.diskfull import fill
from testkit.environment import PACKED, variable
from testkit.rotel import rotel_binary

WORKERS = 2
CHECKS = ("outage", "kill", "soak", "diskfull", "reject")
# After the agent is ready, before a storm: its start-up records are out.
SETTLE = 1.0

OUTAGE_RATE = 500.0
OUTAGE_BEFORE = 10.0  # storm seconds before the collector stops
OUTAGE_AFTER = 20.0  # storm seconds after it is back
OUTAGE_SECONDS = 60.0
OUTAGE_SECONDS_QUICK = 10.0
# From the end of the storm: the agent backs off up to 30 s between tries,
# then sends the backlog (a minute of execs).
OUTAGE_DELIVERY_TIMEOUT = 300.0

KILL_EXECS = 20000
KILL_AT = 2.0  # seconds into the storm
KILL_DELIVERY_TIMEOUT = 120.0
# After everything expected arrived: time for a stray second gap record.
KILL_LINGER = 3.0
# Once everything in the spool arrived, how long to still wait for the rest.
KILL_SPOOL_GRACE = 20.0

SOAK_RATE = 1000.0
SOAK_SECONDS = 600.0
SOAK_SECONDS_QUICK = 60.0
RSS_EVERY = 10.0
# The "1-minute mark". A shorter soak (--quick) compares its second half:
# at 1,000 execs/s RSS grows for ~30 s (caches, tables) before it levels.
RSS_BASELINE = 60.0
RSS_TOLERANCE = 0.10
SOAK_DELIVERY_TIMEOUT = 120.0

REJECT_EXECS = 5000
REJECT_RATE = 500.0
REJECT_DELIVERY_TIMEOUT = 120.0

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"reliability [{time.monotonic() - _T0:6.1f}s]: {message}", flush=True)


@dataclass
class Row:
    check: str
    item: str
    passed: bool | None  # None: information, not a criterion
    measured: str


@dataclass
class Context:
    children: Children
    python: Path
    rotel: Path
    storm: Storm
    workdir: Path
    run_id: str
    outage_seconds: float
    soak_seconds: float
    rows: list[Row] = field(default_factory=list)

    def collector(self, name: str) -> tuple[Path, Rotel, str]:
        """A work directory, a started collector counting the check's marker, the marker."""
        workdir = self.workdir / name
        workdir.mkdir()
        marker = f"{self.run_id}-{name}"
        rotel = Rotel(self.children, self.rotel, workdir, MARKER_KEY, marker, self.storm.binary, detail=True)
        rotel.start()
        return workdir, rotel, marker

    def agent(self, workdir: Path, rotel: Rotel, spool: Path, *extra: str) -> AgentProcess:
        workdir.mkdir(exist_ok=True)
        agent = AgentProcess(self.children, self.python, REPO, workdir, rotel.grpc_endpoint,
                      ["--spool-dir", str(spool), *extra], {})
        agent.start()
        return agent


# -- measurements -------------------------------------------------------------


def dir_bytes(path: Path) -> int:
    total = 0
    try:
        entries = list(path.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            total += entry.stat().st_size
        except FileNotFoundError:
            pass  # deleted (sent) while we looked
    return total


def stats_spool_bytes(stderr: Path) -> list[int]:
    """The spool=...B of each --stats-interval line."""
    sizes = []
    for line in stderr.read_text(errors="replace").splitlines():
        if line.startswith(STATS_PREFIX):
            for item in line.split():
                if item.startswith("spool=") and item.endswith("B"):
                    sizes.append(int(item[len("spool="):-1]))
    return sizes


def wait_until(rotel: Rotel, done: Callable[[], bool], timeout: float,
               during: Callable[[], None] | None = None) -> float | None:
    """Poll the collector until done(): the monotonic time it was, or None after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rotel.poll()
        if done():
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        if during is not None:
            during()
        time.sleep(0.25)


def others_text(counters: dict[str, int], storm_execs: int) -> str:
    """The agent traces every exec on the machine: how many were not the storm's."""
    seen = counters.get("exec_seen", 0)
    return f"the agent saw {seen:,} execs, {seen - storm_execs:,} of them from other processes"


def exec_ids_text(ids: set[tuple[str, int]]) -> str:
    """Whether every exec that arrived had an exec id of its own: a backend
    drops duplicates by it, so a shared one would lose an exec there."""
    shared = sum(1 for n in Counter(i for i, _ in ids).values() if n > 1)
    return ("every exec id distinct" if not shared
            else f"WARNING: {shared:,} exec id(s) each carried by several execs (different event times)")


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.1f} MB"


def storm_text(execs: int, seconds: float, rate: float) -> str:
    return f"{execs:,} execs in {seconds:.1f} s ({rate:,.0f}/s)"


# -- 1. collector outage ----------------------------------------------------------
def check_outage(ctx: Context) -> None:
    outage = ctx.outage_seconds
    workdir, rotel, marker = ctx.collector("outage")
    spool = workdir / "spool"
    agent = ctx.agent(workdir, rotel, spool, "--stats-interval", "1")
    time.sleep(SETTLE)
    total = round(OUTAGE_RATE * (OUTAGE_BEFORE + outage + OUTAGE_AFTER))
    say(f"outage: {total:,} execs at {OUTAGE_RATE:.0f}/s; collector down from {OUTAGE_BEFORE:.0f} s "
        f"for {outage:.0f} s")
    t0 = time.monotonic()
    down_at: float | None = None
    up_at: float | None = None
    max_dir = 0

    def sample() -> None:
        nonlocal max_dir
        max_dir = max(max_dir, dir_bytes(spool))

    def during() -> None:
        nonlocal down_at, up_at
        sample()
        now = time.monotonic()
        if down_at is None and now - t0 >= OUTAGE_BEFORE:
            rotel.poll()
            down_at = time.monotonic()
            rotel.stop()
            say(f"outage: collector stopped at {down_at - t0:.1f} s ({len(rotel.received.ids):,} execs arrived)")
        elif down_at is not None and up_at is None and now - down_at >= outage:
            rotel.restart()
            up_at = time.monotonic()
            say(f"outage: collector listening again at {up_at - t0:.1f} s, same ports")

    result = ctx.storm.run(total, OUTAGE_RATE, marker, during=during, interval=0.5)
    storm_end = time.monotonic()
    while up_at is None:  # a storm that ended early still gets its outage
        during()
        time.sleep(0.5)
    say(f"outage: storm done, {storm_text(result.execs, result.seconds, result.rate)}; waiting for delivery")
    received = rotel.received
    done_at = wait_until(rotel, lambda: len(received.ids) >= result.execs, OUTAGE_DELIVERY_TIMEOUT, sample)
    sample()
    counters = agent.stop()
    rotel.poll()
    rotel.stop()
    assert down_at is not None
    arrived = len(received.ids)
    duplicates = received.storm - arrived
    when = (f"all in by {done_at - up_at:.1f} s after the collector was back" if done_at is not None
            else f"missing {result.execs - arrived:,} after waiting {OUTAGE_DELIVERY_TIMEOUT:.0f} s "
                 f"from the storm's end")
    ctx.rows.append(Row(
        "Collector outage", "every exec arrives", arrived == result.execs,
        f"{arrived:,} of {result.execs:,} ({storm_text(result.execs, result.seconds, result.rate)}; collector "
        f"down {up_at - down_at:.1f} s from {down_at - t0:.1f} s; storm ended {storm_end - up_at:.1f} s after it was "
        f"back); {when}; {duplicates:,} duplicate records; {exec_ids_text(received.ids)}"))
    ctx.rows.append(Row("Collector outage", "no loss counter non-zero",
                        not any(loss_counters(counters).values()),
                        f"{losses_text(counters)}; {others_text(counters, result.execs)}"))
    stats = stats_spool_bytes(agent.stderr_path)
    ctx.rows.append(Row(
        "Collector outage", "spool size", None,
        f"max {mb(max(stats, default=0))} pending (`--stats-interval 1`, {len(stats)} lines), max {mb(max_dir)} "
        f"on disk (spool directory sampled every 0.5 s); default --spool-max-bytes (1 GiB)"))
    say(f"outage: {arrived:,} of {result.execs:,} arrived; {losses_text(counters)}")


# -- 4. spool disk full -------------------------------------------------------------
DISKFULL_FS = "256k"
DISKFULL_RATE = 1000.0
DISKFULL_SECONDS = 20.0
DISKFULL_FROM = 5.0
DISKFULL_TO = 15.0
DISKFULL_AFTER = 1000
DISKFULL_AFTER_RATE = 100.0  # what 256 KiB and a sender that wakes every second keep up with
DISKFULL_DELIVERY_TIMEOUT = 300.0


def check_diskfull(ctx: Context) -> None:
    import subprocess

    workdir, rotel, marker = ctx.collector("diskfull")
    fs = workdir / "tmpfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISKFULL_FS},mode=0700", "tmpfs", str(fs)], check=True)
    try:
        _diskfull(ctx, workdir, fs, rotel, marker)
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def _diskfull(ctx: Context, workdir: Path, fs: Path, rotel: Rotel, marker: str) -> None:
    agent = ctx.agent(workdir / "agent", rotel, fs / "spool", "--stats-interval", "1")
    time.sleep(SETTLE)
    total = round(DISKFULL_RATE * DISKFULL_SECONDS)
    say(f"diskfull: {total:,} execs at {DISKFULL_RATE:.0f}/s; {fs} full and the collector down from "
        f"{DISKFULL_FROM:.0f} s to {DISKFULL_TO:.0f} s")
    t0 = time.monotonic()
    ballast: Path | None = None
    restored = False

    def during() -> None:
        nonlocal ballast, restored
        now = time.monotonic() - t0
        if ballast is None and now >= DISKFULL_FROM:
            rotel.poll()
            rotel.stop()
            ballast = fill(fs)
            say(f"diskfull: {fs} full, collector stopped at {now:.1f} s")
        elif ballast is not None and not restored and now >= DISKFULL_TO:
            ballast.unlink()
            rotel.restart()
            restored = True
            say(f"diskfull: space and collector back at {now:.1f} s")

    result = ctx.storm.run(total, DISKFULL_RATE, marker, during=during, interval=0.5)
    while not restored:
        during()
        time.sleep(0.5)
    alive = agent.child is not None and agent.child.proc.poll() is None
    received = rotel.received

    def drained() -> float | None:
        """Until the agent holds nothing more to send (spool and memory window)."""
        time.sleep(2)  # a stats line from now on
        return wait_until(rotel, lambda: stats_spool_bytes(agent.stderr_path)[-1:] == [0], DISKFULL_DELIVERY_TIMEOUT)

    drained_at = drained()
    say(f"diskfull: {'drained' if drained_at else 'NOT drained'} {(drained_at or time.monotonic()) - t0:.1f} s in; "
        f"{DISKFULL_AFTER:,} execs more at {DISKFULL_AFTER_RATE:.0f}/s")
    before_after = len(received.ids)
    after = ctx.storm.run(DISKFULL_AFTER, DISKFULL_AFTER_RATE, marker)
    done_at = drained()
    after_arrived = len(received.ids) - before_after
    counters = agent.stop()
    rotel.poll()
    rotel.stop()
    exported = counters.get("exported", 0)
    dropped = counters.get("logs_dropped_disk_full", 0)
    storm = len(received.ids)
    # Every exec record, the storm's and the few others: each one once.
    others = sum(received.events.get("otel_exec.process.exec", {}).values())
    delivered = storm + others
    ctx.rows.append(Row("Spool disk full", "the agent keeps running", alive,
                        f"{storm_text(result.execs, result.seconds, result.rate)}; "
                        f"logs_spool_write_failed={counters.get('logs_spool_write_failed', 0):,}, "
                        f"traces_spool_write_failed={counters.get('traces_spool_write_failed', 0):,}"))
    ctx.rows.append(Row("Spool disk full", "every exec after space returned arrives", after_arrived == after.execs,
                        f"{after_arrived:,} of {after.execs:,} ({storm_text(after.execs, after.seconds, after.rate)})"))
    ctx.rows.append(Row("Spool disk full", "exported = delivered + dropped (every exec record)",
                        exported == delivered + dropped,
                        f"exported {exported:,} = delivered {delivered:,} ({storm:,} storm, {others:,} other) + "
                        f"logs_dropped_disk_full {dropped:,}; storm captured {result.execs + after.execs:,}"
                        f" ({'all in' if done_at else 'timed out'}); traces_dropped_disk_full="
                        f"{counters.get('traces_dropped_disk_full', 0):,}; {losses_text(counters)}"))
    say(f"diskfull: exported {exported:,}, delivered {delivered:,}, dropped {dropped:,}")


# -- 2. SIGKILL and restart ------------------------------------------------------
def console_exec_ids(path: Path, marker: str, launcher: Path) -> list[tuple[str, int]]:
    """(exec id, event time) of the storm's execs in a --format jsonl file, in
    file order (a line cut short by the SIGKILL is skipped)."""
    wanted = f"{MARKER_VAR}={marker}"
    ids = []
    for line in path.read_bytes().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or wanted not in (event.get("env") or []):
            continue
        argv = event.get("argv") or []
        if argv and argv[0] == str(launcher):
            continue  # the storm launcher, which also has the marker
        ids.append((event["exec_id"], event["timestamp"]))
    return ids


def _string(any_value: bytes) -> str | None:
    """AnyValue.string_value, or None."""
    for number, wire, value in protowire.fields(any_value):
        if number == 1 and wire == protowire.LEN and isinstance(value, bytes):
            return value.decode(errors="replace")
    return None


def _string_or_strings(any_value: bytes) -> str | list[str] | None:
    """AnyValue.string_value, or the strings of its array_value (the packed
    environment), or None."""
    for number, wire, value in protowire.fields(any_value):
        if number == 5 and wire == protowire.LEN and isinstance(value, bytes):
            return [_string(v) or "" for n, _, v in protowire.fields(value) if n == 1 and isinstance(v, bytes)]
    return _string(any_value)


def spooled_storm_execs(spool: Path, marker: str, launcher: Path) -> set[tuple[str, int]] | None:
    """(exec id, event time) of the storm's exec records in a spool's log
    segments, sent or not (see otel_exec/export/spool.py: length-prefixed records,
    each a LogRecord framed as a field of its scope block); None when the
    segments cannot be read so."""
    wanted = marker.encode()
    found: set[tuple[str, int]] = set()
    try:
        for segment in sorted(spool.glob("logs-*.seg")):
            data = segment.read_bytes()
            pos = 0
            while pos + 4 <= len(data):
                size = int.from_bytes(data[pos:pos + 4], "little")
                framed = data[pos + 4:pos + 4 + size]
                pos += 4 + size
                if len(framed) < size:
                    break  # cut short by the SIGKILL
                if wanted not in framed:
                    continue
                ((_, _, record),) = protowire.fields(framed)
                assert isinstance(record, bytes)
                time_ns, body, attributes = 0, None, {}
                for number, wire, value in protowire.fields(record):
                    if number == 1 and wire == protowire.I64 and isinstance(value, bytes):
                        time_ns = int.from_bytes(value, "little")
                    elif number == 5 and wire == protowire.LEN and isinstance(value, bytes):
                        body = _string(value)
                    elif number == 6 and wire == protowire.LEN and isinstance(value, bytes):
                        kv = {n: v for n, _, v in protowire.fields(value)}
                        key, any_value = kv.get(1), kv.get(2)
                        if isinstance(key, bytes) and isinstance(any_value, bytes):
                            attributes[key.decode(errors="replace")] = any_value
                env = {key: _string_or_strings(attributes[key]) for key in (MARKER_KEY, PACKED) if key in attributes}
                if variable(env, MARKER_VAR) != marker:
                    continue
                if body is not None and body.startswith(str(launcher)):
                    continue
                exec_id = attributes.get("otel_exec.exec_id")
                if exec_id is None:
                    return None
                found.add((_string(exec_id) or "", time_ns))
    except (ValueError, IndexError, AssertionError):
        return None
    return found


def check_kill(ctx: Context) -> None:
    workdir, rotel, marker = ctx.collector("kill")
    spool = workdir / "spool"
    console = workdir / "first" / "events.jsonl"
    first = ctx.agent(workdir / "first", rotel, spool,
                      "--exporter", "otlp,console", "--format", "jsonl", "--output", str(console))
    time.sleep(SETTLE)
    # Started while no agent runs: the restart must report it from /proc.
    sleeper_path = workdir / f"sleeper-{marker}"
    sleeper_path.symlink_to("/bin/sleep")
    sleeper: Child | None = None
    say(f"kill: {KILL_EXECS:,} unthrottled execs, agent SIGKILLed {KILL_AT:.0f} s in")
    t0 = time.monotonic()
    killed_at: float | None = None
    kill_ns = 0

    def during() -> None:
        nonlocal killed_at, kill_ns, sleeper
        if killed_at is None and time.monotonic() - t0 >= KILL_AT:
            kill_ns = time.time_ns()
            killed_at = time.monotonic()
            first.kill()
            sleeper = ctx.children.start("sleeper", [str(sleeper_path), "3600"])

    result = ctx.storm.run(KILL_EXECS, 0, marker, during=during, interval=0.05)
    mid_storm = killed_at is not None
    if not mid_storm:
        during()  # too fast a storm: the kill is not mid-storm, reported below
    assert killed_at is not None and sleeper is not None
    read = console_exec_ids(console, marker, ctx.storm.binary)
    read_set = set(read)
    # What the SIGKILL left in the spool for the next agent to send.
    spooled = spooled_storm_execs(spool, marker, ctx.storm.binary)
    rotel.poll()
    before = set(rotel.received.ids)
    pending = None if spooled is None else spooled - before
    say(f"kill: storm done, {storm_text(result.execs, result.seconds, result.rate)}; the first agent printed "
        f"{len(read):,} storm execs, {len(read_set & before):,} of them arrived before the restart, "
        + ("its spool could not be read" if spooled is None
           else f"{len(spooled):,} in its spool ({len(pending or ()):,} of them not delivered yet)"))

    restart_ns = time.time_ns()
    second = ctx.agent(workdir / "second", rotel, spool)
    restarted = time.monotonic()
    received = rotel.received
    since = restart_ns // 10**9  # observed records stamped at or after the restart's second

    def complete() -> bool:
        if not received.gaps or sleeper.pid not in received.observed:
            return False
        if read_set <= received.ids:
            return True
        # Only the spool is sent again: once it all arrived, printed execs
        # that are still missing never will (seen the same after 120 s).
        return (spooled is not None and spooled <= received.ids
                and time.monotonic() - restarted > KILL_SPOOL_GRACE)

    done_at = wait_until(rotel, complete, KILL_DELIVERY_TIMEOUT)
    time.sleep(KILL_LINGER)
    rotel.poll()
    counters = second.stop()
    rotel.poll()
    rotel.stop()
    ctx.children.stop(sleeper)

    arrived = read_set & received.ids
    missing = [i for i in read if i not in received.ids]
    where = ""
    if missing:
        tail = read[-len(missing):] == missing
        where = (f"; missing: the last {len(missing):,} lines printed" if tail
                 else f"; missing: {len(missing):,} lines, not only the last ones")
        if spooled is not None:
            in_spool = sum(1 for i in missing if i in spooled)
            where += f", {in_spool:,} of them in the spool after the SIGKILL"
            if tail and not in_spool:
                # The console writes its lines as a drain of the ring buffer
                # goes (its buffer overflows every ~40 lines), the spool is
                # written once at the end of the drain.
                where += (" (printed during the drain the SIGKILL cut short, which never reached the "
                          "spool)")
    ctx.rows.append(Row(
        "Agent SIGKILL + restart", "every exec the first agent read arrives",
        mid_storm and bool(read) and not missing,
        f"{len(arrived):,} of {len(read):,} read (printed to its console file){where}; SIGKILL "
        f"{killed_at - t0:.1f} s into a storm of {storm_text(result.execs, result.seconds, result.rate)}"
        + ("" if mid_storm else " (the storm ended before the kill: not mid-storm)")
        + ("; all had arrived before the restart" if read_set <= before
           else f"; {len(read_set & before):,} had arrived before the restart, "
           + (f"the rest within {done_at - restarted:.1f} s after it" if not missing and done_at else
              f"{len(arrived) - len(read_set & before):,} after it"))
        + f"; {len(received.ids):,} of {result.execs:,} storm execs arrived in all (the others ran "
          f"while no agent watched); {exec_ids_text(received.ids)}"))
    if spooled is None:
        ctx.rows.append(Row("Agent SIGKILL + restart", "every exec in its spool arrives", None,
                            "the spool's segments could not be read (has its format changed?)"))
    else:
        assert pending is not None
        ctx.rows.append(Row(
            "Agent SIGKILL + restart", "every exec in its spool arrives", spooled <= received.ids,
            f"{len(spooled & received.ids):,} of the {len(spooled):,} storm execs in the spool's segment files "
            f"after the SIGKILL ({len(pending):,} of them not delivered then: "
            f"{len(pending & received.ids):,} arrived after the restart)"))
    gaps = received.gaps
    if gaps:
        t, seconds = gaps[0]
        start = t - seconds * 1e9
        covers = start <= kill_ns and t >= restart_ns
        gap_text = (f"{len(gaps)} record(s); the first says {seconds:.2f} s, from {(kill_ns - start) / 1e9:.2f} s "
                    f"before the SIGKILL to {(t - restart_ns) / 1e9:.2f} s after the new agent was launched "
                    f"({(restart_ns - kill_ns) / 1e9:.1f} s apart)")
    else:
        covers = False
        gap_text = "none arrived"
    ctx.rows.append(Row("Agent SIGKILL + restart", "one otel_exec.agent.gap record covering the kill",
                        len(gaps) == 1 and covers, gap_text))
    observed = sum(n for s, n in received.events.get("otel_exec.process.observed", {}).items() if s >= since)
    ctx.rows.append(Row(
        "Agent SIGKILL + restart", "otel_exec.process.observed records at the restart",
        observed > 0 and sleeper.pid in received.observed,
        f"{observed:,} records; the process started while no agent ran (pid {sleeper.pid}) "
        + ("is among them" if sleeper.pid in received.observed else "is not among them")))
    ctx.rows.append(Row("Agent SIGKILL + restart", "no loss counter non-zero (restarted agent)",
                        not any(loss_counters(counters).values()), losses_text(counters)))
    say(f"kill: {len(arrived):,} of {len(read):,} read arrived; gap records {len(gaps)}; observed {observed}")


# -- 3. memory over a long storm --------------------------------------------------
def check_soak(ctx: Context) -> None:
    seconds = ctx.soak_seconds
    baseline_at = min(RSS_BASELINE, seconds / 2)
    workdir, rotel, marker = ctx.collector("soak")
    agent = ctx.agent(workdir, rotel, workdir / "spool")
    time.sleep(SETTLE)
    total = round(SOAK_RATE * seconds)
    say(f"soak: {total:,} execs at {SOAK_RATE:.0f}/s (~{seconds:.0f} s), VmRSS every {RSS_EVERY:.0f} s")
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = []  # (seconds into the storm, VmRSS kB)

    def during() -> None:
        elapsed = time.monotonic() - t0
        if elapsed >= RSS_EVERY * (len(samples) + 1):
            samples.append((elapsed, agent.status_kb("VmRSS")))
            if len(samples) % 6 == 0:
                say(f"soak: {elapsed:.0f} s, VmRSS {kb_to_mb(samples[-1][1]):.1f} MB")

    result = ctx.storm.run(total, SOAK_RATE, marker, during=during)
    samples.append((time.monotonic() - t0, agent.status_kb("VmRSS")))  # the end
    received = rotel.received
    done_at = wait_until(rotel, lambda: len(received.ids) >= result.execs, SOAK_DELIVERY_TIMEOUT)
    counters = agent.stop()
    rotel.poll()
    rotel.stop()

    base_t, base = next((t, kb) for t, kb in samples if t >= baseline_at - 0.5)
    end_t, end = samples[-1]
    change = (end - base) / base
    values = [kb for _, kb in samples]
    ctx.rows.append(Row(
        "Memory flat", f"RSS at the end within {RSS_TOLERANCE:.0%} of RSS at {baseline_at:.0f} s",
        abs(change) <= RSS_TOLERANCE,
        f"{kb_to_mb(base):.1f} MB at {base_t:.0f} s, {kb_to_mb(end):.1f} MB at {end_t:.0f} s ({change:+.1%}); "
        f"first {kb_to_mb(values[0]):.1f}, min {kb_to_mb(min(values)):.1f}, max {kb_to_mb(max(values)):.1f} MB "
        f"({len(samples)} samples, VmRSS every {RSS_EVERY:.0f} s); "
        f"{storm_text(result.execs, result.seconds, result.rate)}"))
    arrived = len(received.ids)
    ctx.rows.append(Row(
        "Memory flat", "every exec arrives", arrived == result.execs,
        f"{arrived:,} of {result.execs:,}"
        + (f", all in {done_at - t0 - result.seconds:.1f} s after the storm" if done_at is not None
           else f" after waiting {SOAK_DELIVERY_TIMEOUT:.0f} s")
        + f"; {received.storm - arrived:,} duplicate records; {exec_ids_text(received.ids)}"))
    ctx.rows.append(Row("Memory flat", "no loss counter non-zero",
                        not any(loss_counters(counters).values()),
                        f"{losses_text(counters)}; {others_text(counters, result.execs)}"))
    say("soak: VmRSS (MB) at " + ", ".join(f"{t:.0f} s {kb_to_mb(kb):.1f}" for t, kb in samples))
    say(f"soak: RSS {kb_to_mb(base):.1f} -> {kb_to_mb(end):.1f} MB ({change:+.1%}); "
        f"{arrived:,} of {result.execs:,} arrived")


# -- 4. a collector that refuses ---------------------------------------------------
def check_reject(ctx: Context) -> None:
    workdir = ctx.workdir / "reject"
    workdir.mkdir()
    marker = f"{ctx.run_id}-reject"
    tally = workdir / "collector.json"
    collector = ctx.children.start(
        "rejecting-collector", [str(ctx.python), str(REPO / "bench" / "rejecting_collector.py"), str(tally), marker,
                                str(ctx.storm.binary)], stdout=subprocess.PIPE)
    assert collector.proc.stdout is not None
    port = int(collector.proc.stdout.readline())
    agent = AgentProcess(ctx.children, ctx.python, REPO, workdir, f"http://127.0.0.1:{port}", ["--stats-interval", "1"],
                  {})
    agent.start()
    time.sleep(SETTLE)
    say(f"reject: {REJECT_EXECS:,} execs at {REJECT_RATE:.0f}/s against a collector refusing on a cycle")
    result = ctx.storm.run(REJECT_EXECS, REJECT_RATE, marker)
    # Sent (or dropped) all it has: the spool is empty in two stats lines in a row.
    deadline = time.monotonic() + REJECT_DELIVERY_TIMEOUT
    while time.monotonic() < deadline and stats_spool_bytes(agent.stderr_path)[-2:] != [0, 0]:
        time.sleep(1)
    counters = agent.stop()
    ctx.children.stop(collector)
    seen = json.loads(tally.read_text())
    logs, traces = seen["logs"], seen["traces"]
    delivered, refused = set(logs["storm"]["delivered"]), set(logs["storm"]["refused"])
    vanished = result.execs - len(delivered | refused)
    ctx.rows.append(Row(
        "Rejecting collector", "every exec delivered or counted as rejected", vanished == 0,
        f"captured {result.execs:,} ({storm_text(result.execs, result.seconds, result.rate)}): delivered "
        f"{len(delivered):,}, rejected {len(refused):,} (of them {len(delivered & refused):,} also delivered: "
        f"at-least-once), vanished {vanished:,}"))
    for signal_name, at_collector in (("logs", logs), ("traces", traces)):
        agent_side = (counters.get(f"{signal_name}_exported"), counters.get(f"{signal_name}_rejected"),
                      counters.get(f"{signal_name}_export_retries"))
        collector_side = (at_collector["taken"], at_collector["refused"], at_collector["retryable_answers"])
        ctx.rows.append(Row(
            "Rejecting collector", f"{signal_name}: agent's exported / rejected / retries = collector's taken / "
            "refused / retryable answers", agent_side == collector_side,
            f"agent {' / '.join(f'{v:,}' for v in agent_side if v is not None)}; collector "
            f"{' / '.join(f'{v:,}' for v in collector_side)} over {at_collector['requests']:,} requests"))
    ctx.rows.append(Row("Rejecting collector", "nothing lost but the rejected records",
                        not any(v for k, v in loss_counters(counters).items() if not k.endswith("_rejected")),
                        losses_text(counters)))
    say(f"reject: delivered {len(delivered):,}, rejected {len(refused):,}, vanished {vanished:,}; "
        f"{losses_text(counters)}")


RUNNERS: dict[str, Callable[[Context], None]] = {"outage": check_outage, "kill": check_kill, "soak": check_soak,
                                                 "diskfull": check_diskfull, "reject": check_reject}
TITLES = {"outage": "Collector outage", "kill": "Agent SIGKILL + restart", "soak": "Memory flat",
          "diskfull": "Spool disk full", "reject": "Rejecting collector"}


# -- report --------------------------------------------------------------------------
def verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("**pass**" if passed else "**FAIL**")


def table(rows: list[Row]) -> str:
    lines = ["| Check | Item | Result | Measured |", "|---|---|---|---|"]
    for row in rows:
        measured = row.measured.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row.check} | {row.item} | {verdict(row.passed)} | {measured} |")
    return "\n".join(lines)


def render(rows: list[Row], checks: list[str], outage: float, soak: float, command: str,
           started: datetime.datetime, about: str) -> str:
    short = ("outage" in checks and outage < OUTAGE_SECONDS) or ("soak" in checks and soak < SOAK_SECONDS)
    plan = {
        "outage": (f"collector outage: /bin/true at {OUTAGE_RATE:.0f} execs/s for "
                   f"{OUTAGE_BEFORE + outage + OUTAGE_AFTER:.0f} s, the collector stopped {OUTAGE_BEFORE:.0f} s in "
                   f"for {outage:.0f} s then started on the same ports; the agent with its default spool "
                   "(fresh --spool-dir) and `--stats-interval 1`"),
        "kill": (f"SIGKILL: {KILL_EXECS:,} unthrottled execs, the agent (`--exporter otlp,console --format jsonl "
                 f"--output FILE`) SIGKILLed {KILL_AT:.0f} s in, a new agent on the same spool after the storm; "
                 "'read' = the storm execs in the first agent's console file"),
        "soak": (f"memory: {soak:.0f} s at {SOAK_RATE:.0f} execs/s, VmRSS every {RSS_EVERY:.0f} s"),
        "diskfull": (f"disk full: the spool on a {DISKFULL_FS} tmpfs, /bin/true at {DISKFULL_RATE:.0f} execs/s for "
                     f"{DISKFULL_SECONDS:.0f} s, the tmpfs filled and the collector down from {DISKFULL_FROM:.0f} s "
                     f"to {DISKFULL_TO:.0f} s; once the agent drained, {DISKFULL_AFTER:,} execs more at "
                     f"{DISKFULL_AFTER_RATE:.0f}/s; 'exported' = exec records the "
                     "agent made (its final line), 'delivered' = distinct exec records at the collector"),
        "reject": (f"rejecting collector: {REJECT_EXECS:,} execs at {REJECT_RATE:.0f}/s, OTLP/gRPC to "
                   "bench/rejecting_collector.py (not rotel) which, per signal and request n, refuses n % 10 == 3 "
                   "(INVALID_ARGUMENT), answers n % 10 == 6 UNAVAILABLE and n % 10 == 8 a partial success "
                   "refusing the last record; 'delivered' and 'rejected' are the storm's exec ids as it took "
                   "or refused them"),
    }
    failed = sum(1 for r in rows if r.passed is False)
    parts = [
        *section_head(f"## {started:%Y-%m-%d %H:%M} UTC: reliability{' (smoke run)' if short else ''}", about, command),
        ("`bench/reliability.py`, issue 5's acceptance. Collector (but for the rejecting collector): rotel on "
         "loopback (blackhole exporter), its processor noting the exec id of every storm record, so a record "
         "delivered twice (at least once) counts once. Storm: " + "; ".join(plan[c] for c in checks) + ". Loss "
         "counters: the agent's final stderr line (kernel ring buffer, queue, spool eviction, failed, rejected, "
         "decode errors, process table evictions)."),
        "",
        table(rows),
        "",
        f"{'All items pass.' if not failed else f'{failed} item(s) FAIL.'}",
    ]
    if short:
        parts += ["", (f"A smoke run: the acceptance asks for a {OUTAGE_SECONDS:.0f} s outage and a "
                       f"{SOAK_SECONDS / 60:.0f}-minute soak (the defaults).")]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {OUTAGE_SECONDS_QUICK:.0f} s outage, {SOAK_SECONDS_QUICK:.0f} s soak")
    parser.add_argument("--outage-seconds", type=float,
                        help=f"how long the collector is down (default {OUTAGE_SECONDS:.0f}; --quick: "
                             f"{OUTAGE_SECONDS_QUICK:.0f})")
    parser.add_argument("--soak-seconds", type=float,
                        help=f"length of the memory storm (default {SOAK_SECONDS:.0f}; --quick: "
                             f"{SOAK_SECONDS_QUICK:.0f})")
    parser.add_argument("--only", action="append", choices=CHECKS,
                        help="run only this check (repeatable; default: all, in the order above)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md",
                        help="Markdown file the results are appended to (default: BENCHMARKS.md)")
    args = parser.parse_args(argv)
    checks = [c for c in CHECKS if not args.only or c in args.only]
    outage = args.outage_seconds or (OUTAGE_SECONDS_QUICK if args.quick else OUTAGE_SECONDS)
    soak = args.soak_seconds or (SOAK_SECONDS_QUICK if args.quick else SOAK_SECONDS)
    if outage <= 0 or soak < 6 * RSS_EVERY:
        parser.error(f"--outage-seconds must be > 0 and --soak-seconds >= {6 * RSS_EVERY:.0f}")
    if os.geteuid() != 0:
        print("reliability: run as root (the agent needs it)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    command = shlex.join(["python3", "bench/reliability.py", *argv])
    about = machine()
    load = load_average()
    if load > IDLE_LOAD:
        say(f"note: load average {load}: a loaded machine makes delivery slower, not a check laxer")

    with Session("oereliability-", "reliability: logs and spools kept in") as session:
        children, workdir = session.children, session.workdir
        python = agent_python()
        ctx = Context(children, python, rotel_binary(python), Storm(children, workdir, WORKERS), workdir,
                      started.strftime("%Y%m%dT%H%M%S"), outage, soak)
        say(f"work directory {workdir}; agent: {python} -m otel_exec; checks: {', '.join(checks)}")
        for name in checks:
            try:
                RUNNERS[name](ctx)
            except Exception as e:  # noqa: BLE001 -- a check that breaks is a FAIL row; the others still run
                children.stop_all()
                traceback.print_exc()
                ctx.rows.append(Row(TITLES[name], "ran to the end", False,
                                    "error: " + " ".join(str(e).split())[:400]))
        publish(args.output, render(ctx.rows, checks, outage, soak, command, started, about), say)
        session.ok = not any(row.passed is False for row in ctx.rows)
    return 0 if session.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)  # everything was stopped in main's finally
