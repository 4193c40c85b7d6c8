"""The container image: built from the Dockerfile (scripts/image build), run
with the DaemonSet's capabilities (scripts/image run), it reports the host's
execs to a collector on loopback, drops its privileges, stops cleanly on
SIGTERM, and `otel-exec health` in the container follows it.

buildah with chroot isolation runs the container in the host's pid and
network namespaces with the host's /sys: the agent in it sees the live
kernel, the test's execs and the session's rotel. The first build takes
minutes (the base from debootstrap, the packages); later ones reuse the
cached layers (docs/operations.md#the-container-image).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.agent_run import ROOT, kernel_available, marked_env, new_mark
from tests.helpers.collector import Collector
from testkit.environment import variable

pytestmark = [pytest.mark.kernel, pytest.mark.needs_buildah]

SCRIPT = str(ROOT / "scripts" / "image")
IMAGE = "localhost/otel-exec:test"


@pytest.fixture(scope="module")
def image() -> str:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    built = subprocess.run([SCRIPT, "build"], env=dict(os.environ, OTEL_EXEC_IMAGE=IMAGE), capture_output=True,
                           text=True, timeout=1800)
    if built.returncode != 0 and shutil.which("buildah") is None:
        pytest.skip(f"buildah cannot be installed: {built.stderr[-1000:]}")
    assert built.returncode == 0, built.stderr[-4000:]
    return IMAGE


def buildah_run(container: str, run_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A second command in the agent's container, with its /run/otel-exec (as a probe runs)."""
    return subprocess.run(["buildah", "run", "--isolation", "chroot", "-v", f"{run_dir}:/run/otel-exec", container,
                           "--", *argv], capture_output=True, text=True, timeout=60)


class ImageAgent:
    """`scripts/image run` of the agent: OTLP to `endpoint` and only the
    execs under `bindir` (the machine may be busy with others' execs), set
    in the configuration file; the batch delays and a resource attribute by
    OTEL_* variables."""

    def __init__(self, workdir: Path, endpoint: str, bindir: Path) -> None:
        self.name = f"otel-exec-test-{uuid.uuid4().hex[:12]}"
        self.bindir = bindir
        config = workdir / "config.yaml"
        config.write_text(f"exporter: otlp\nendpoint: {endpoint}\npath_prefix: [{bindir}/]\n")
        # The ready file's directory from the host, as a volume would be: the test waits for it
        # without a buildah call racing scripts/image's own (buildah 1.28 can crash on that).
        self.run_dir = workdir / "run"
        self.run_dir.mkdir(mode=0o755)
        self.err = workdir / "agent.stderr"
        self.proc = subprocess.Popen(
            [SCRIPT, "run", "--name", self.name, "-v", f"{config}:/etc/otel-exec/config.yaml:ro",
             "-v", f"{self.run_dir}:/run/otel-exec",
             "-e", "OTEL_BLRP_SCHEDULE_DELAY=200", "-e", "OTEL_BSP_SCHEDULE_DELAY=200",
             "-e", "OTEL_RESOURCE_ATTRIBUTES=k8s.node.name=image-test"],
            env=dict(os.environ, OTEL_EXEC_IMAGE=IMAGE), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.err, "w"))

    def health(self) -> subprocess.CompletedProcess[str]:
        return buildah_run(self.name, self.run_dir, "otel-exec", "health")

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.run_dir / "ready").exists():
            assert self.proc.poll() is None, f"the agent exited: {self.err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no ready file: {self.err.read_text()[-3000:]}"
            time.sleep(0.05)
        while (result := self.health()).returncode != 0:
            assert self.proc.poll() is None, f"the agent exited: {self.err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not healthy: {result.stderr}{self.err.read_text()[-3000:]}"
            time.sleep(0.2)

    def pid(self) -> int:
        return int((self.run_dir / "ready").read_text())

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        return rc, self.err.read_text()


@pytest.fixture
def image_agent(image: str, collector: Collector, tmp_path: Path) -> Iterator[ImageAgent]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    agent = ImageAgent(tmp_path, collector.grpc_endpoint, bindir)
    try:
        agent.wait_healthy()
        yield agent
    finally:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait(60)


def test_image_agent_delivers_host_execs(image_agent: ImageAgent, collector: Collector) -> None:
    pid = image_agent.pid()
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    # Dropped once attached: no capability left, none to regain.
    assert (status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip()) == (
        "0000000000000000", "0000000000000000", "1")

    mark = new_mark()
    true = image_agent.bindir / "oe-true"
    shutil.copy2(os.path.realpath("/bin/true"), true)
    exec_ = subprocess.Popen([str(true)], env=marked_env(mark))
    assert exec_.wait() == 0
    [log] = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark, timeout=120)
    assert log.event_name == "otel_exec.process.exec"
    assert log.attributes["process.executable.path"] == str(true)
    assert log.attributes["process.pid"] == exec_.pid
    assert log.resource.get("k8s.node.name") == "image-test"
    [span] = collector.wait_for_spans(lambda s: s.span_id == log.span_id, timeout=120)
    assert span.trace_id == log.trace_id

    # A stuck agent is unhealthy: its loop no longer touches the ready file.
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3)
        stuck = buildah_run(image_agent.name, image_agent.run_dir, "otel-exec", "health", "--max-age", "2")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert stuck.returncode == 1
    assert stuck.stderr.startswith("otel-exec: error: unhealthy: /run/otel-exec/ready was last refreshed "), \
        stuck.stderr
    image_agent.wait_healthy()

    rc, err = image_agent.stop()
    assert rc == 0, err
    assert "otel-exec: info: stopped; " in err, err
