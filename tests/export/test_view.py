"""The terminal view in a real terminal (tmux), exit records in JSON Lines,
colour rules on a pty, and the stop summary."""
from __future__ import annotations

import io
import logging
import os
import pty
import re
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.agent_run import (ROOT, AgentRun, kernel_available, marked_env, new_cgroup, new_mark,
                                      overflow_the_ring, stats_lines, stop_line)
from otel_exec.export.console import ConsoleSink, colour_wanted, duration_text
from otel_exec.export.summary import summary_lines
from tests.helpers.progs import Progs

SMALLEST_RING = 2 * 1024 * 1024


@pytest.fixture
def need_kernel() -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)


class TmuxAgent:
    """`otel-exec run` as the only process of a tmux pane (private server),
    the pane kept after the agent exits so its last lines can be read."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None, pipe: bool = False) -> None:
        self.socket = f"oe-view-{new_mark()}"
        self.ready = workdir / "ready"
        agent = [sys.executable, "-m", "otel_exec", "run", "--ready-file", str(self.ready), "--poll-interval",
                 "0.05", *args]
        command = " ".join(map(shlex_quote, agent)) + (" | cat" if pipe else "")
        environ = {k: v for k, v in (env or os.environ).items() if k != "TMUX"}
        environ["TERM"] = "xterm-256color"
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", "250", "-y", "50", "-s", "view", "sh",
                   env=environ)
        self._tmux("set-option", "-g", "history-limit", "200000")
        self._tmux("set-option", "-g", "remain-on-exit", "on")
        # A new window gets the history limit set above.
        self._tmux("new-window", "-t", "view", "-c", str(ROOT), ("exec " if not pipe else "") + command)
        self.pane_pid = int(self._tmux("display-message", "-p", "-t", "view", "#{pane_pid}").strip())
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            assert time.monotonic() < deadline, self.screen()
            time.sleep(0.05)

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              env=env).stdout

    def screen(self, escapes: bool = False) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "view", *(["-e"] if escapes else []))

    def interrupt(self) -> None:
        """Ctrl-C, as a person stops it; waits for the agent's last line."""
        self._tmux("send-keys", "-t", "view", "C-c")
        deadline = time.monotonic() + 30
        while "otel-exec: info: stopped after" not in self.screen():
            assert time.monotonic() < deadline, self.screen()
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def copy_of(src: str, dest: Path) -> str:
    shutil.copy2(src, dest)
    return str(dest)


def lines_with(screen: str, text: str) -> list[str]:
    return [line for line in screen.splitlines() if text in line]


@pytest.mark.kernel
def test_view_shows_exec_and_exit_lines_with_code_and_duration(need_kernel: None, progs: Progs,
                                                               tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    ok = copy_of(progs.static_true, bindir / "oe-ok")
    failing = copy_of("/bin/false", bindir / "oe-fail")
    sleeper = copy_of("/bin/sleep", bindir / "oe-sleep")
    view = TmuxAgent(tmp_path, "--path-prefix", str(bindir))
    try:
        subprocess.run([ok], check=True)
        subprocess.run([failing], check=False)
        killed = subprocess.Popen([sleeper, "30"])
        time.sleep(0.3)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        deadline = time.monotonic() + 10
        while not lines_with(view.screen(), "killed by SIGKILL"):
            assert time.monotonic() < deadline, view.screen()
            time.sleep(0.1)
        screen = view.screen()
        view.interrupt()
    finally:
        view.close()
    duration = r"after \d+(\.\d+)?(µs|ms|s): "
    assert re.search(rf"^\S+ +\d+ +\d+ +0 {re.escape(ok)}: {re.escape(ok)}$", screen, re.M), screen
    assert re.search(rf" exit 0 {duration}{re.escape(ok)}$", screen, re.M), screen
    assert re.search(rf" exit 1 {duration}/\S*{re.escape(failing)}$", screen, re.M) or \
        re.search(rf" exit 1 {duration}{re.escape(os.path.realpath(failing))}$", screen, re.M), screen
    [sleep_exit] = lines_with(screen, "killed by SIGKILL")
    assert re.search(rf"killed by SIGKILL after (\d+(\.\d+)?ms|0\.\d\ds|\d\.\d\ds): .*oe-sleep$", sleep_exit), sleep_exit
    assert re.search(rf"^\S+ +{killed.pid} ", sleep_exit)


@pytest.mark.kernel
def test_view_tree_indents_a_shell_tree(need_kernel: None, progs: Progs, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    shell = copy_of(os.path.realpath("/bin/sh"), bindir / "oe-sh")
    child = copy_of(progs.static_true, bindir / "oe-child")
    view = TmuxAgent(tmp_path, "--tree", "--path-prefix", str(bindir))
    try:
        subprocess.run([shell, "-c", f"{child}; {child} x; exit 3"], check=False)
        deadline = time.monotonic() + 10
        while len(lines_with(view.screen(), "exit 3 after")) < 1:
            assert time.monotonic() < deadline, view.screen()
            time.sleep(0.1)
        screen = view.screen()
    finally:
        view.close()
    [sh_line] = [line for line in lines_with(screen, f"{shell}: ") if "exit 3 after" not in line]
    children = [line for line in lines_with(screen, f"{child}: {child}")]
    assert len(children) == 2, screen
    column = lambda line, text: line.index(text)  # noqa: E731
    for line in children:
        assert "└─ " in line
        assert column(line, child + ":") > column(sh_line, shell + ":")
    [sh_exit] = lines_with(screen, "exit 3 after")
    child_exits = lines_with(screen, "exit 0 after")
    assert len(child_exits) == 2
    assert all(column(e, "exit 0") > column(sh_exit, "exit 3") for e in child_exits), screen


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["tty", "no_color", "piped"])
def test_view_colours_failures_only_on_a_terminal_without_no_color(need_kernel: None, tmp_path: Path,
                                                                   how: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    failing = copy_of("/bin/false", bindir / "oe-fail")
    env = dict(os.environ, NO_COLOR="1") if how == "no_color" else dict(os.environ)
    env.pop("NO_COLOR", None) if how != "no_color" else None
    extra = ("--format", "pretty") if how == "piped" else ()
    view = TmuxAgent(tmp_path, *extra, "--path-prefix", str(bindir), env=env, pipe=how == "piped")
    try:
        subprocess.run([failing], check=False)
        deadline = time.monotonic() + 10
        while not lines_with(view.screen(), "exit 1 after"):
            assert time.monotonic() < deadline, view.screen()
            time.sleep(0.1)
        [line] = lines_with(view.screen(escapes=True), "exit 1 after")
    finally:
        view.close()
    assert ("\x1b[31m" in line) == (how == "tty"), repr(line)


@pytest.mark.kernel
def test_summary_on_stop_names_a_forced_loss(need_kernel: None, progs: Progs, tmp_path: Path) -> None:
    """The agent is frozen while big execs overflow the smallest ring: on
    Ctrl-C the summary's warning says what was lost and why. (Frozen
    through its cgroup: tmux continues a pane's process stopped by SIGSTOP.)"""
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    prog = copy_of(progs.static_true, bindir / "oe_viewloss")
    with new_cgroup(f"oe-view-{new_mark()[:12]}") as freezer:
        view = TmuxAgent(tmp_path, "--comm", "oe_viewloss", "--ringbuf-bytes", str(SMALLEST_RING))
        try:
            (freezer / "cgroup.procs").write_text(str(view.pane_pid))
            (freezer / "cgroup.freeze").write_text("1")
            try:
                overflow_the_ring(prog, new_mark())
            finally:
                (freezer / "cgroup.freeze").write_text("0")
            time.sleep(1)
            view.interrupt()
            screen = view.screen()
        finally:
            view.close()
    summary = screen[screen.index("otel-exec: info: stopped after"):]
    assert re.search(r"otel-exec: info: stopped after \d+\.\ds: \d+ execs seen, \d+ reported", summary), summary
    assert re.search(r"otel-exec: warning: lost \d+: lost_exec_ringbuf_full: execs the kernel dropped: the ring "
                     r"buffer was full \(raise --ringbuf-bytes\)", summary), summary
    assert "stopped;" not in screen  # the full counter set only with --verbose on a terminal
    assert "=0" not in summary  # zero counters are left out


@pytest.mark.kernel
def test_jsonl_exit_records_match_their_execs(need_kernel: None, progs: Progs, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    failing = copy_of("/bin/false", bindir / "oe-fail")
    sleeper = copy_of("/bin/sleep", bindir / "oe-sleep")
    run = AgentRun(tmp_path / "agent", "--path-prefix", str(bindir))
    try:
        mark = new_mark()
        subprocess.run([failing], env=marked_env(mark), check=False)
        killed = subprocess.Popen([sleeper, "30"], env=marked_env(mark))
        time.sleep(0.2)
        killed.kill()
        killed.wait()
        [fail_exec] = run.find(lambda e: e["cmdpath"] == failing)
        [sleep_exec] = run.find(lambda e: e["cmdpath"] == sleeper)
        deadline = time.monotonic() + 10
        while len(run.exits) < 2 and time.monotonic() < deadline:
            run.find(lambda e: False, timeout=0.1)
    finally:
        run.stop()
    by_exec_id = {e["exec_id"]: e for e in run.exits}
    fail_exit, sleep_exit = by_exec_id[fail_exec["exec_id"]], by_exec_id[sleep_exec["exec_id"]]
    assert fail_exit["exit_code"] == 1 and fail_exit["signal"] is None and fail_exit["host_pid"] == fail_exec["host_pid"]
    assert sleep_exit["signal"] == signal.SIGKILL and sleep_exit["signal_name"] == "SIGKILL"
    assert sleep_exit["exit_code"] is None and sleep_exit["host_pid"] == killed.pid
    for exit_record, exec_record in ((fail_exit, fail_exec), (sleep_exit, sleep_exec)):
        assert exit_record["exec_time"] == exec_record["timestamp"]
        assert exit_record["duration_ns"] == exit_record["timestamp"] - exec_record["timestamp"] > 0
    assert sleep_exit["duration_ns"] >= 200_000_000


def test_colour_rules_on_a_pty_and_a_pipe() -> None:
    leader, follower = pty.openpty()
    read_end, write_end = os.pipe()
    try:
        with open(follower, "w", closefd=False) as tty, open(write_end, "w", closefd=False) as pipe:
            assert colour_wanted(tty, "auto", {})
            assert not colour_wanted(tty, "auto", {"NO_COLOR": "1"})
            assert colour_wanted(tty, "auto", {"NO_COLOR": ""})  # no-color.org: set and not empty
            assert not colour_wanted(pipe, "auto", {})
            assert colour_wanted(pipe, "always", {}) and not colour_wanted(tty, "never", {})
    finally:
        for fd in (leader, follower, read_end, write_end):
            os.close(fd)


def test_duration_text() -> None:
    assert [duration_text(ns) for ns in (999, 999_600, 1_500_000, 999_960_000, 2_340_000_000, 59_996_000_000,
                                         125 * 10**9, 3725 * 10**9)] == \
        ["1µs", "1.0ms", "1.5ms", "1.00s", "2.34s", "1m00s", "2m05s", "1h02m05s"]


def test_summary_lists_losses_first_and_leaves_zero_counters_out() -> None:
    report = {"exec_seen": 10, "exec_filtered": 0, "exported": 9, "exits_seen": 8, "logs_exported": 9,
              "logs_export_retries": 2, "lost_exec_ringbuf_full": 1, "cut_argv": 0, "ringbuf_used_bytes": 4096}
    lines = summary_lines(report, 3.0)
    assert lines[0] == (logging.INFO, "stopped after 3.0s: 10 execs seen, 9 reported, 8 exits; exported 9 log records")
    assert lines[1][0] == logging.WARNING and lines[1][1].startswith("lost 1: lost_exec_ringbuf_full: ")
    assert lines[2] == (logging.INFO, "2 logs_export_retries: export requests that failed and were retried "
                                      "(collector down or slow)")
    assert len(lines) == 3
    assert summary_lines({"exec_seen": 1, "exported": 1}, 1.0)[-1] == (logging.INFO, "nothing was lost")


def test_redaction_marker_stands_out_in_colour() -> None:
    from tests.helpers.events import sample_exec

    out = io.StringIO()
    sink = ConsoleSink(out, "pretty", colour=True)
    sink.on_exec(sample_exec(argv=["curl", "-H", "Authorization: [REDACTED]"]), None)  # type: ignore[arg-type]
    sink.flush()
    assert "\x1b[7m[REDACTED]\x1b[0m" in out.getvalue().splitlines()[1]


LINE_FORMAT = re.compile(r"^otel-exec: (debug|info|warning|error): ")
# The stop summary's losses show whatever OTEL_LOG_LEVEL says (docs/operations.md#stderr).
LOSS_SUMMARY = re.compile(r"^otel-exec: warning: (lost \d+: |events were lost: )")


@pytest.mark.kernel
@pytest.mark.parametrize("level", ["info", "error"])
def test_every_stderr_line_has_the_prefix_and_a_level_and_follows_otel_log_level(
        need_kernel: None, progs: Progs, tmp_path: Path, level: str) -> None:
    """Stats lines, a ring loss forced while the agent is stopped, a dead
    collector (the export loop's warnings, the metric exporter's errors)
    and the stop: every stderr line is `otel-exec: LEVEL: `, and
    OTEL_LOG_LEVEL=error leaves errors and the summary's losses only."""
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    prog = copy_of(progs.static_true, bindir / "oe_logloss")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    try:
        endpoint = f"http://127.0.0.1:{port.getsockname()[1]}"  # bound, not listening: refused
        run = AgentRun(tmp_path / "agent", "--endpoint", endpoint, "--exporter", "otlp", "--no-spool",
                       "--comm", "oe_logloss", "--ringbuf-bytes", str(SMALLEST_RING), "--stats-interval", "0.2",
                       env=dict(os.environ, OTEL_LOG_LEVEL=level, OTEL_METRIC_EXPORT_INTERVAL="200"))
        os.kill(run.proc.pid, signal.SIGSTOP)
        try:
            overflow_the_ring(prog, new_mark())
        finally:
            os.kill(run.proc.pid, signal.SIGCONT)
        time.sleep(1.5)  # stats lines, export retries, metric exports
        rc, err = run.stop()
    finally:
        port.close()
    assert rc == 0, err
    lines = err.splitlines()
    assert lines and all(LINE_FORMAT.match(line) for line in lines), err
    assert any(re.match(r"otel-exec: warning: lost \d+: lost_exec_ringbuf_full: ", line) for line in lines), err
    assert any(line.startswith("otel-exec: error: Failed to export metrics to ") for line in lines), err
    if level == "info":
        assert stats_lines(err) and stop_line(err)["lost_exec_ringbuf_full"] > 0, err
        assert any(line.startswith("otel-exec: info: stopped after ") for line in lines), err
        assert any(line.startswith("otel-exec: warning: Failed to export logs") for line in lines), err
    else:
        assert all(line.startswith("otel-exec: error: ") or LOSS_SUMMARY.match(line) for line in lines), err


def _ended(exec_time: int | None, exit_code: int | None = 0, sig: int | None = None, end_ns: int = 0):
    """The span of an image that ended by exiting at end_ns."""
    from otel_exec.lineage.spans import ProcessSpan
    from otel_exec.model.process import ProcessInfo

    info = ProcessInfo(pid=4242, ppid=1, start_ticks=5, exec_id="e" * 32, parent_exec_id="", comm="sleep",
                       exe="/usr/bin/sleep", argv=["sleep", "9"], seeded_from_proc=exec_time is None,
                       exec_time=exec_time, exit_code=exit_code, signal=sig)
    return ProcessSpan(info, b"", b"", b"", "", "", "", 0, end_ns=end_ns, ended_by="exit")


def test_exits_of_processes_running_at_start_are_left_out_when_a_filter_is_set() -> None:
    shown, filtered = io.StringIO(), io.StringIO()
    for out, seeded_exits in ((shown, True), (filtered, False)):
        sink = ConsoleSink(out, "jsonl", seeded_exits=seeded_exits)
        sink.on_span_end(_ended(None, end_ns=2_000_000_000))
        sink.on_span_end(_ended(1_000_000_000, None, signal.SIGTERM, end_ns=2_000_000_000))
        sink.flush()
    import json

    assert [json.loads(line)["duration_ns"] for line in shown.getvalue().splitlines()] == [None, 1_000_000_000]
    [record] = [json.loads(line) for line in filtered.getvalue().splitlines()]
    assert record == {"event": "exit", "timestamp": 2_000_000_000, "host_pid": 4242, "host_ppid": 1,
                      "exec_id": "e" * 32, "comm": "sleep", "exe": "/usr/bin/sleep", "exit_code": None,
                      "signal": signal.SIGTERM, "signal_name": "SIGTERM", "exec_time": 1_000_000_000,
                      "duration_ns": 1_000_000_000}


def test_exec_line_names_the_container_and_the_pod() -> None:
    from tests.helpers.events import sample_exec
    from otel_exec.export.console import pretty_line

    pod = "0d4c1b52-3f6e-4a3b-9b8e-2f1c9d7a6e55"
    cid = "ab" * 32
    ev = sample_exec(container_id=cid, cgroup_path=f"/kubepods/burstable/pod{pod}/{cid}")
    assert f" [{cid[:12]} pod 0d4c1b52] " in pretty_line(ev)
    systemd = sample_exec(container_id=None, cgroup_path=f"/kubepods.slice/kubepods-pod{pod.replace('-', '_')}.slice")
    assert " [pod 0d4c1b52] " in pretty_line(systemd)
    assert "[" not in pretty_line(sample_exec(container_id=None, cgroup_path="/user.slice")).split(": ")[0]


@pytest.mark.kernel
def test_exec_line_of_a_process_in_a_kubepods_cgroup_names_its_container_and_pod(
        need_kernel: None, progs: Progs, tmp_path: Path) -> None:
    """A shell moves itself into a cgroup laid out as the kubelet's systemd
    driver and containerd make one, then execs: the view's line shows the
    short container id and the pod (its UID's first 8 characters)."""
    pod = str(uuid.uuid4())
    cid = secrets.token_hex(32)
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    prog = copy_of(progs.static_true, bindir / "oe_inpod")
    names = (f"oe-view-{new_mark()[:12]}", "kubepods.slice", f"kubepods-pod{pod.replace('-', '_')}.slice",
             f"cri-containerd-{cid}.scope")
    with new_cgroup(*names) as container:
        view = tmp_path / "view.txt"  # the later --format and --output win over AgentRun's
        run = AgentRun(tmp_path / "agent", "--format", "pretty", "--output", str(view), "--comm", "oe_inpod")
        subprocess.run(["/bin/sh", "-c", f"echo $$ > {container}/cgroup.procs && exec {prog}"], check=True)
        time.sleep(0.5)
        rc, err = run.stop()
    assert rc == 0, err
    [line] = [line for line in view.read_text().splitlines() if prog in line and "exit" not in line.split(prog)[0]]
    assert f" [{cid[:12]} pod {pod[:8]}] " in line, line
