"""A host's one-off execs (each with its own argv or environment, as a test
suite's) leave nothing in the decoder's and the encoder's memos; what
repeats is kept. Before, every one-off exec's blocks, shared part and
encoding stayed until the memos' bounds emptied them: over a long run
with other work on the machine the agent's resident memory grew by the
memos' size (BENCHMARKS.md, the soak).

The programs are loaded in this process (the CO-RE backend's own source),
real execs are read from the ring and decoded, and the OTLP encoder
encodes them as the sink does.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from otel_exec.config import Config
from otel_exec.core.source import CoreSource
from otel_exec.export.otlp import encode
from otel_exec.host.identity import HostIdentity
from otel_exec.model.events import Event, ExecEvent
from tests.helpers.agent_run import marked_env, new_mark

pytestmark = pytest.mark.kernel

ONE_OFF = 300
REPEATED = 20
TRUE = "/bin/true"


@pytest.fixture
def source() -> Iterator[CoreSource]:
    src = CoreSource(Config(), HostIdentity.current())
    src.attach()
    yield src
    src.close()


def read_marked(source: CoreSource, mark: str, count: int) -> list[ExecEvent]:
    """Every event in the ring, decoded; the first `count` execs marked
    with `mark` encoded as the OTLP sink encodes them, and returned."""
    seen: list[ExecEvent] = []
    entry = f"OE_TEST_MARK={mark}"

    def handle(ev: Event) -> None:
        if isinstance(ev, ExecEvent) and entry in ev.env:
            encode.exec_attributes(ev)
            seen.append(ev)

    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        source.wait(0.05)
        source.drain(handle)
    assert len(seen) == count
    return seen


def test_one_off_execs_are_not_kept_what_repeats_is(source: CoreSource, tmp_path: Path) -> None:
    mark = new_mark()
    one_off = f"{mark}-job-"
    # Through a shell: the agent's own children are not reported.
    script = (f'i=0; while [ $i -lt {ONE_OFF} ]; do JOB={one_off}$i {TRUE} --id={one_off}$i; i=$((i+1)); done; '
              f'i=0; while [ $i -lt {REPEATED} ]; do {TRUE} --again={mark}; i=$((i+1)); done')
    subprocess.run(["sh", "-c", script], env=marked_env(mark), check=True, cwd=tmp_path)
    events = read_marked(source, mark, ONE_OFF + REPEATED)
    decoder = source.decoder
    memos = {"shared parts": list(decoder._shared), "argv blocks": [raw for raw, _ in decoder.argv_blocks._cache],
             "env blocks": [raw for raw, _ in decoder.env_blocks._cache]}
    encodings = [b"".join((common.log, common.span, body)) for common, body in encode._shared_encodings.values()]
    # Nothing of a one-off exec is kept, in any memo, however many came.
    for name, keys in memos.items():
        assert not any(one_off.encode() in key for key in keys), name
    assert not any(one_off.encode() in encoded for encoded in encodings)
    # The repeated command's parts are kept, and its later execs share them.
    again = f"--again={mark}".encode()
    assert any(again in key for key in memos["shared parts"])
    assert any(again in key for key in memos["argv blocks"])
    assert any(again in encoded for encoded in encodings)
    repeated = events[ONE_OFF:]
    assert all(ev.shared is repeated[-1].shared and ev.argv is repeated[-1].argv for ev in repeated[2:])
