"""The agent as a user runs it: storms, --duration, signals, filters, errors."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import (ROOT, AgentRun, counters_from, kernel_available, marked, marked_env, new_mark,
                                     STOP_SIGNAL_IDS, STOP_SIGNALS, stopped_while_waiting)
from otel_exec import cli
from otel_exec.core import probes
from tests.helpers.progs import Progs

kernel = pytest.mark.kernel
TRUE = os.path.realpath("/bin/true")


@pytest.fixture
def need_kernel() -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)


@kernel
def test_storm_every_exec_printed_zero_loss(need_kernel: None, tmp_path: Path) -> None:
    run = AgentRun(tmp_path)  # default poll interval and ring size
    mark = new_mark()
    per_worker = 2500
    loop = f"i=0; while [ $i -lt {per_worker} ]; do /bin/true; i=$((i+1)); done"
    workers = [subprocess.Popen(["/bin/sh", "-c", loop], env=marked_env(mark)) for _ in range(2)]
    assert all(w.wait(timeout=300) == 0 for w in workers)
    hits = run.find(lambda e: marked(mark)(e) and e["pathname"] == TRUE, count=2 * per_worker, timeout=30)
    rc, err = run.stop(signal.SIGINT)
    assert rc == 0, err
    assert len(hits) == 2 * per_worker
    assert len({e["host_pid"] for e in hits}) == 2 * per_worker
    counters = counters_from(err)
    assert {k: v for k, v in counters.items() if k.startswith("lost_")} == dict.fromkeys(
        [k for k in counters if k.startswith("lost_")], 0)
    assert counters["decode_errors"] == 0
    assert "WARNING" not in err


@kernel
@pytest.mark.parametrize("sig,other_thread", STOP_SIGNALS, ids=STOP_SIGNAL_IDS)
def test_a_stop_signal_ends_the_wait(need_kernel: None, tmp_path: Path, sig: int, other_thread: bool) -> None:
    stopped_while_waiting(tmp_path, sig, other_thread=other_thread)


@kernel
def test_duration_prints_a_concurrent_ls(need_kernel: None) -> None:
    mark = new_mark()
    t0 = time.monotonic()
    ready = Path(tempfile.mkdtemp()) / "ready"
    agent = subprocess.Popen([sys.executable, "-m", "otel_exec", "run", "--duration", "3", "--ready-file",
                              str(ready)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not ready.exists() and agent.poll() is None:
        time.sleep(0.02)
    subprocess.run(["ls", "-l", "/"], env=marked_env(mark), stdout=subprocess.DEVNULL, check=True)
    out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert time.monotonic() - t0 >= 3
    import json

    events = [json.loads(line) for line in out.splitlines()]
    ls = [e for e in events if marked(mark)(e)]
    assert len(ls) == 1 and ls[0]["argv"] == ["ls", "-l", "/"]
    assert ls[0]["pathname"] == os.path.realpath(shutil.which("ls"))
    assert "stopped;" in err


def _filtered_run(tmp_path: Path, progs: Progs, *flags: str) -> tuple[list[dict], dict[str, int], dict]:
    """Runs the agent with flags, execs a fixed set of programs, returns the
    events of those programs, the counters and the programs' names."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    names = {"keep": bindir / "oe-keep", "drop": bindir / "oe-drop"}
    for p in names.values():
        shutil.copy2(progs.dyn_true, p)
    run = AgentRun(tmp_path, *flags)
    mark = new_mark()
    env = marked_env(mark, API_TOKEN="s3cr3t", TRACEPARENT="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    for p in names.values():
        subprocess.run([str(p), "--password=hunter2"], env=env, check=True)
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(names["keep"])],
                   env=env, check=True)
    subprocess.run(["unshare", "--pid", "--fork", str(names["keep"]), "in-ns"], env=env, check=True)
    time.sleep(0.3)
    hits = run.find(lambda e: e["pathname"].startswith(str(bindir)), count=99, timeout=1)
    rc, err = run.stop()
    assert rc == 0, err
    return hits, counters_from(err), names


@kernel
@pytest.mark.parametrize("flags,expect", [
    ([], {("oe-keep", 0, "host"), ("oe-drop", 0, "host"), ("oe-keep", 65534, "host"), ("oe-keep", 0, "ns")}),
    (["--comm", "oe-keep"], {("oe-keep", 0, "host"), ("oe-keep", 65534, "host"), ("oe-keep", 0, "ns")}),
    (["--exclude-comm", "oe-keep"], {("oe-drop", 0, "host")}),
    (["--uid", "65534"], {("oe-keep", 65534, "host")}),
    (["--container-only"], {("oe-keep", 0, "ns")}),
])
def test_kernel_filters(need_kernel: None, progs: Progs, tmp_path: Path, flags: list[str], expect: set) -> None:
    events, counters, _ = _filtered_run(tmp_path, progs, *flags)
    own_ns = os.readlink("/proc/self/ns/pid")
    seen = {(e["comm"], e["uid"], "host" if f"pid:[{e['pid_ns']}]" == own_ns else "ns") for e in events}
    assert seen == expect
    assert len(events) == len(expect)
    if flags:
        assert counters["exec_filtered"] > 0


@kernel
def test_path_prefix_filter(need_kernel: None, progs: Progs, tmp_path: Path) -> None:
    events, _, names = _filtered_run(tmp_path, progs, "--path-prefix", str(tmp_path / "bin" / "oe-d"))
    assert [e["pathname"] for e in events] == [str(names["drop"])]


@kernel
@pytest.mark.parametrize("mode", ["redacted", "none", "all"])
def test_env_capture_and_argv_redaction(need_kernel: None, progs: Progs, tmp_path: Path, mode: str) -> None:
    flags = [] if mode == "redacted" else ["--env-capture", mode]
    events, _, _ = _filtered_run(tmp_path, progs, "--comm", "oe-drop", *flags)
    (ev,) = events
    traceparent = "TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    # Kept unless no environment is wanted at all: lineage reads it before
    # redaction (tests/policy/test_redaction_corpus.py).
    assert (traceparent in ev["env"]) == (mode != "none")
    if mode == "all":
        assert "API_TOKEN=s3cr3t" in ev["env"]
    elif mode == "redacted":
        assert "API_TOKEN=[REDACTED]" in ev["env"]
        assert any(e.startswith("OE_TEST_MARK=") for e in ev["env"])
    else:
        assert ev["env"] == []
    assert ev["argv"][1] == "--password=[REDACTED]"  # argv redaction does not depend on --env-capture


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--env-capture", "bogus"]) == 2
    assert cli.main(["run", "--trust-traceparent", "bob"]) == 2
    assert "--trust-traceparent 'bob'" in capsys.readouterr().err
    assert cli.main(["run", "--redact-pattern", "("]) == 2
    assert cli.main(["run", "--redact-allow", "[a"]) == 2
    assert "--redact-allow '[a': not a regular expression" in capsys.readouterr().err
    assert cli.main(["run", "--argv-max-bytes", str(10**9)]) == 2
    assert "--argv-max-bytes must be between" in capsys.readouterr().err
    assert cli.main(["run", "--comm", "a-name-longer-than-15"]) == 2
    assert cli.main(["frobnicate"]) == 2


@kernel
def test_missing_privilege_exit_3(need_kernel: None) -> None:
    proc = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "otel_exec",
                           "run", "--duration", "1"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0
    assert "CAP_BPF" in proc.stderr and "sudo" in proc.stderr


@kernel
def test_no_btf_exit_4(need_kernel: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(probes, "VMLINUX_BTF", tmp_path / "no-such-btf")
    assert cli.main(["run", "--duration", "1"]) == 4
    err = capsys.readouterr().err
    assert "BTF" in err and err.count("\n") == 1


# The maps and config the loader sets up, and a program the verifier rejects (in
# both builds of the exec program: the loader picks one).
BAD_PROG = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
const volatile char cfg[64] = {};
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 20); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, long); }
    scratch SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __uint(map_flags, BPF_F_MMAPABLE);
         __type(key, int); __type(value, long); } counters SEC(".maps");
SEC("tp_btf/sched_process_exec")
int handle_exec(void *ctx) { return *(volatile int *)(long)cfg[0]; }
SEC("tp_btf/sched_process_exec")
int handle_exec_probed(void *ctx) { return *(volatile int *)(long)cfg[0]; }
"""


def _load_bad_object(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The loader loads BAD_PROG, built now, instead of the package's object."""
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROG)
    obj = tmp_path / "bad.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", str(src), "-o",
                    str(obj)], check=True)
    monkeypatch.setattr(probes, "object_path", lambda: obj)


@kernel
def test_bpf_load_failure_exit_6_with_verifier_lines(need_kernel: None, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _load_bad_object(monkeypatch, tmp_path)
    assert cli.main(["run", "--duration", "1"]) == 6
    err = capsys.readouterr().err
    assert "handle_exec" in err
    assert "invalid mem access" in err  # the verifier's own words


@kernel
@pytest.mark.parametrize("bad_object", [True, False])
def test_a_set_up_failure_during_the_load(need_kernel: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], bad_object: bool) -> None:
    """The sinks are made while the programs load (on a thread of their
    own): an --output that cannot be opened is reported once the load has
    ended, and a load that failed is reported instead, as when the load
    came first; no thread is left behind either way."""
    if bad_object:
        _load_bad_object(monkeypatch, tmp_path)
    threads = set(os.listdir("/proc/self/task"))
    assert cli.main(["run", "--exporter", "console", "--output", str(tmp_path / "no-such-dir" / "out"),
                     "--duration", "1"]) == (6 if bad_object else 2)
    err = capsys.readouterr().err
    assert ("invalid mem access" in err) == bad_object
    assert ("--output" in err) != bad_object
    assert set(os.listdir("/proc/self/task")) <= threads


@kernel
@pytest.mark.parametrize("bad_object", [True, False])
def test_a_failed_check_while_the_load_goes_on(need_kernel: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str], bad_object: bool) -> None:
    """The load begins as soon as the configuration is valid, before the
    preflight checks: a check that fails is reported as when the load came
    after it, even when the load fails too, and the load is dropped, its
    thread gone."""
    if bad_object:
        _load_bad_object(monkeypatch, tmp_path)
    not_a_directory = tmp_path / "spool"
    not_a_directory.write_bytes(b"")
    threads = set(os.listdir("/proc/self/task"))
    assert cli.main(["run", "--exporter", "otlp", "--endpoint", "http://127.0.0.1:9", "--spool-dir",
                     str(not_a_directory), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and err.count("\n") == 1
    assert set(os.listdir("/proc/self/task")) <= threads


@kernel
def test_start_source_checks_privileges_and_backend_once(need_kernel: None, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """Without a load begun (Agent.attach alone), start_source reports that
    this process may not load eBPF before what a backend would need; with
    one begun (sources.begin_core_load), that load's check and choice of the
    CO-RE backend stand: the programs begun are the ones attached, nothing
    asked again decides otherwise."""
    from otel_exec import sources
    from otel_exec.bcc import toolchain
    from otel_exec.config import Config
    from otel_exec.errors import PrivilegeError
    from otel_exec.host import privileges
    from otel_exec.host.identity import HostIdentity

    def no_bcc(*_: object) -> None:
        raise ImportError("no python module `bcc`")

    identity = HostIdentity.current()
    loading = sources.begin_core_load(Config())
    assert loading is not None
    # From here on: no capability, no kernel BTF, no BCC.
    monkeypatch.setattr(privileges, "effective_caps", lambda: 0)
    monkeypatch.setattr(probes, "VMLINUX_BTF", tmp_path / "no-such-btf")
    monkeypatch.setattr(toolchain, "import_bcc", no_bcc)
    with pytest.raises(PrivilegeError, match="CAP_BPF and CAP_PERFMON"):
        sources.start_source(Config(), identity)
    source = sources.start_source(Config(), identity, loading)()
    try:
        assert source.probes is loading and source.ring_bytes == loading.ringbuf_bytes
    finally:
        source.close()


def test_heap_trimmer_trims_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_exec.cli import HeapTrimmer

    calls: list[int] = []
    clock = iter([100.0, 101.0, 100.0 + HeapTrimmer.INTERVAL_S, 200.0])
    monkeypatch.setattr("otel_exec.cli.time.monotonic", lambda: next(clock))
    trimmer = HeapTrimmer()
    trimmer._trim = calls.append  # type: ignore[assignment]
    for _ in range(4):
        trimmer()
    assert calls == [0, 0, 0]  # at 100, 105 and 200 s; not at 101 s


def test_run_help_gives_each_option_one_line_at_100_columns() -> None:
    """`otel-exec run --help` in a 100-column terminal: no line is wider, and
    each option's help is one line (beside the option, or under it when the
    option is long); the longer texts are in docs/configuration.md."""
    proc = subprocess.run([sys.executable, "-m", "otel_exec", "run", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, COLUMNS="100"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    options = lines[lines.index("options:"):lines.index("examples:")]
    helps: dict[str, list[str]] = {}
    option = ""
    for line in options:
        if line.startswith("  -"):
            option, _, text = line.strip().partition("  ")
            helps[option] = [text.strip()] if text.strip() else []
        elif line.startswith(" " * 24) and option:
            helps[option].append(line.strip())
        elif not line.startswith("  "):
            option = ""  # a group's title or description
    assert len(helps) > 40 and all(len(text) == 1 for text in helps.values()), \
        {o: t for o, t in helps.items() if len(t) != 1}
