"""`otel-exec check` on this machine: everything passes as configured, and
each prerequisite broken on purpose (in a private mount namespace where it
is the kernel's) gives its line, its fix and a non-zero exit."""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.helpers.agent_run import ROOT, kernel_available
from tests.helpers.collector import Collector
from testkit.fake_collector import FakeCollector, Reply
from tests.helpers.tls import TOKEN, Pki, TlsReceiver, tls_env

pytestmark = pytest.mark.kernel
CHECK = [sys.executable, "-m", "otel_exec", "check"]


@pytest.fixture(autouse=True)
def need_kernel() -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)


def check(*args: str, env: dict[str, str] | None = None, unshare_first: str = "") -> tuple[int, dict[str, str]]:
    """Exit code, and each check's line (with its fix) by name."""
    cmd = CHECK + list(args)
    if unshare_first:
        # A private mount namespace: what the script mounts is seen by the check only.
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-ec",
               f"{unshare_first}\nexec {shlex.join(cmd)}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    lines: dict[str, str] = {}
    name = ""
    for line in proc.stdout.splitlines():
        if line.startswith("       fix: "):
            lines[name] += "\n" + line.strip()
        elif ":" in line and line[:4] in ("PASS", "WARN", "FAIL"):
            name = line[5:].split(":")[0]
            lines[name] = line
    assert proc.stderr == "" or "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, lines


def spool(tmp_path: Path) -> str:
    return str(tmp_path / "spool")


def test_all_pass_on_this_machine(collector: Collector, tmp_path: Path) -> None:
    rc, lines = check("--endpoint", collector.grpc_endpoint, "--spool-dir", spool(tmp_path))
    assert rc == 0, lines
    assert not [line for line in lines.values() if line.startswith("FAIL")]
    for name in ("privileges", "btf", "ring buffer and tp_btf", "co-re load", "tracefs", "spool", "otlp",
                 "host identity"):
        assert lines[name].startswith("PASS"), lines
    assert "the collector accepted a test record" in lines["otlp"]
    assert {"sched_prepare_exec", "bcc fallback", "clock"} <= set(lines)


def test_http_protocol_passes_too(collector: Collector, tmp_path: Path) -> None:
    rc, lines = check("--endpoint", collector.http_endpoint, "--protocol", "http/protobuf",
                      "--spool-dir", spool(tmp_path))
    assert rc == 0 and "http/protobuf" in lines["otlp"] and "accepted" in lines["otlp"], lines


def test_tracefs_unmounted_and_unmountable(tmp_path: Path) -> None:
    hide = ("mount -t tmpfs none /sys/kernel/tracing; touch /sys/kernel/tracing/not-tracefs; "
            "mount -t tmpfs none /sys/kernel/debug")
    rc, lines = check("--backend", "bcc", unshare_first=hide)
    assert rc != 0
    assert lines["tracefs"].startswith("FAIL tracefs: not mounted"), lines
    assert "fix: `mount -t tracefs nodev /sys/kernel/tracing`" in lines["tracefs"]
    # The CO-RE backend does not need it: a warning with the same fix, and run would start.
    rc, lines = check("--backend", "core", unshare_first=hide)
    assert rc == 0 and lines["tracefs"].startswith("WARN"), lines


def test_tracefs_unmounted_but_mountable_is_no_failure(tmp_path: Path) -> None:
    rc, lines = check(unshare_first="umount -l /sys/kernel/tracing; mount -t tmpfs none /sys/kernel/debug")
    assert rc == 0 and lines["tracefs"].startswith("PASS tracefs: not mounted"), lines


def test_btf_hidden(tmp_path: Path) -> None:
    rc, lines = check("--backend", "core", unshare_first="mount -t tmpfs none /sys/kernel/btf")
    assert rc == 4, lines
    assert lines["btf"].startswith("FAIL btf: /sys/kernel/btf/vmlinux is not readable"), lines
    assert "fix: use a kernel built with CONFIG_DEBUG_INFO_BTF=y" in lines["btf"]


def test_spool_directory_owned_by_another_user(collector: Collector, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    rc, lines = check("--endpoint", collector.grpc_endpoint, "--spool-dir", str(directory))
    assert rc == 2, lines
    assert f"FAIL spool: spool directory {directory} belongs to uid 65534" in lines["spool"], lines
    assert f"fix: chown root:root {directory}" in lines["spool"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_down(protocol: str, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    rc, lines = check("--endpoint", endpoint, "--protocol", protocol, "--spool-dir", spool(tmp_path))
    assert rc == 1, lines
    assert lines["otlp"].startswith(f"FAIL otlp: {protocol} ") and ": retry: " in lines["otlp"], lines
    assert "refused" in lines["otlp"].lower(), lines
    assert "fix: check the collector is up" in lines["otlp"]


def test_collector_refusing_gives_its_answer(tmp_path: Path) -> None:
    refuse = lambda signal, records, nth: Reply(grpc.StatusCode.PERMISSION_DENIED, message="bad token")  # noqa: E731
    with FakeCollector(refuse) as fake:
        rc, lines = check("--endpoint", fake.endpoint("grpc"), "--spool-dir", spool(tmp_path))
        assert fake.refused_count("logs") == 1
    assert rc == 1
    assert "rejected: PERMISSION_DENIED bad token" in lines["otlp"], lines


def test_tls_with_the_right_ca_passes_and_a_wrong_ca_fails(pki: Pki, receiver: TlsReceiver, tmp_path: Path) -> None:
    args = ("--endpoint", receiver.endpoint("grpc"), "--header", f"authorization={TOKEN}",
            "--spool-dir", spool(tmp_path))
    client = (pki.client_cert, pki.client_key)
    rc, lines = check(*args, env=tls_env(pki, ca=pki.ca, client=client))
    assert rc == 0 and "accepted" in lines["otlp"], lines
    rc, lines = check(*args, env=tls_env(pki, ca=pki.rogue_ca, client=client))
    assert rc == 1 and lines["otlp"].startswith("FAIL otlp: grpc 127.0.0.1"), lines
    assert "UNAVAILABLE" in lines["otlp"], lines


def test_run_prints_every_failing_check_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    cmd = shlex.join([sys.executable, "-m", "otel_exec", "run", "--backend", "core", "--endpoint",
                      "http://127.0.0.1:9", "--spool-dir", str(directory), "--duration", "1"])
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec",
                           f"mount -t tmpfs none /sys/kernel/btf\nexec {cmd}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr  # the first failure's code
    errors = proc.stderr.splitlines()
    assert len(errors) == 2, proc.stderr
    assert errors[0].startswith("otel-exec: error: /sys/kernel/btf/vmlinux is not readable")
    assert errors[1].startswith(f"otel-exec: error: spool directory {directory} belongs to uid 65534")
