"""otel_exec.core.libbpf against the real kernel, with the program of bpf_testprog.py."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers.bpf_testprog import (
    CNT_RING_FULL,
    CNT_SEEN,
    OBJ_NAME,
    RING_BYTES,
    Rec,
    config,
    spawn,
)

from otel_exec.config import Config
from otel_exec.errors import BpfError, BpfLoadError
from otel_exec.core.libbpf import BpfObject, num_possible_cpus
from otel_exec.core.probes import KernelProbes
from otel_exec.core.ringbuf import NATIVE, RingBuffer

pytest_plugins = ("tests.helpers.bpf_testprog",)  # its fixtures: bpf_prog_path, open_prog, loaded
Opener = Callable[[], BpfObject]
BSS = f"{OBJ_NAME}.bss"
KEY0 = struct.pack("=I", 0)
ROOT = Path(__file__).resolve().parents[2]


def test_open_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BpfError, match="No such file or directory") as info:
        BpfObject(str(tmp_path / "missing.bpf.o"))
    assert info.value.exit_code == 6
    assert "\n" not in str(info.value)


def test_open_not_elf(tmp_path: Path) -> None:
    path = tmp_path / "junk.bpf.o"
    path.write_bytes(b"not an ELF file")
    with pytest.raises(BpfError, match="cannot open BPF object"):
        BpfObject(str(path))


@pytest.mark.kernel
def test_program_names_and_unknown_names(open_prog: Opener) -> None:
    obj = open_prog()
    assert obj.program_names() == ["on_exec", "rejected"]
    with pytest.raises(BpfError, match="no BPF program named 'nope'"):
        obj.set_autoload("nope", True)
    with pytest.raises(BpfError, match="no BPF map named 'nope'"):
        obj.set_max_entries("nope", 1)


@pytest.mark.kernel
def test_rodata_must_fit(open_prog: Opener) -> None:
    obj = open_prog()
    with pytest.raises(BpfError, match="does not fit"):
        obj.set_rodata(bytes(9))


@pytest.mark.kernel
def test_no_configuration_after_load(loaded: BpfObject) -> None:
    with pytest.raises(BpfError, match="after load"):
        loaded.set_rodata(config())  # would be a write to read-only memory
    with pytest.raises(BpfError, match="after load"):
        loaded.set_max_entries("rb", 8 * 4096)
    with pytest.raises(BpfError, match="after load"):
        loaded.set_autoload("rejected", True)
    with pytest.raises(BpfError, match="after load"):
        loaded.load()


@pytest.mark.kernel
def test_set_max_entries(open_prog: Opener) -> None:
    obj = open_prog()
    assert obj.max_entries("rb") == RING_BYTES
    obj.set_max_entries("rb", 8 * 4096)
    assert obj.max_entries("rb") == 8 * 4096


@pytest.mark.kernel
def test_verifier_rejection(open_prog: Opener, capfd: pytest.CaptureFixture[str]) -> None:
    obj = open_prog()
    obj.set_autoload("rejected", True)
    with pytest.raises(BpfLoadError) as info:
        obj.load()
    err = info.value
    assert err.exit_code == 6
    assert isinstance(err, BpfError)
    assert err.summary.startswith("cannot load BPF object")
    assert "\n" not in err.summary
    # The verifier's verdict on the unchecked pointer, from the log tail.
    assert "invalid mem access 'ringbuf_mem_or_null'" in err.log_tail
    assert err.log_tail in str(err)
    assert len(err.log_tail.splitlines()) <= 20
    assert capfd.readouterr().err == ""  # captured, not printed


@pytest.mark.kernel
def test_load_is_quiet_and_keeps_no_debug_chatter(open_prog: Opener,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    obj = open_prog()
    obj.set_rodata(config())
    obj.load()
    assert capfd.readouterr().err == ""
    # libbpf said nothing above debug level about this load, and its debug
    # messages are dropped (in C when the extension is built).
    assert obj.log == ""


@pytest.mark.kernel
@pytest.mark.parametrize("native", ["1", "0"])
def test_libbpf_debug_keeps_and_logs_the_debug_messages(bpf_prog_path: Path, native: str) -> None:
    """OTEL_EXEC_LIBBPF_DEBUG=1 (read when the module is imported: a
    process of its own) keeps them and logs them at debug level, through
    the C filter or without it."""
    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format='%(levelname)s %(message)s')\n"
            "from otel_exec.core.libbpf import BpfObject\n"
            "from tests.helpers.bpf_testprog import config\n"
            f"obj = BpfObject({str(bpf_prog_path)!r})\n"
            "obj.set_rodata(config())\n"
            "obj.load()\n"
            "print(obj.log.count('libbpf: '))\n"
            "obj.close()\n")
    env = {**os.environ, "OTEL_EXEC_LIBBPF_DEBUG": "1", "OTEL_EXEC_NATIVE": native}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) > 10
    assert "DEBUG libbpf: " in out.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("finish", ["load", "close"])
def test_start_load_verifies_on_a_thread_gone_when_load_or_close_returns(open_prog: Opener, finish: str) -> None:
    """Gone from /proc/self/task too: the agent's privilege drop follows."""
    obj = open_prog()
    obj.set_rodata(config())
    before = set(os.listdir("/proc/self/task"))
    obj.start_load()
    with pytest.raises(BpfError, match="after load"):
        obj.set_autoload("rejected", True)
    getattr(obj, finish)()
    assert set(os.listdir("/proc/self/task")) <= before
    if finish == "load":
        obj.attach_all()
        with RingBuffer(obj.map_fd("rb"), RING_BYTES) as ring:
            spawn(1)
            assert ring.drain(lambda v: None) == 1


@pytest.mark.kernel
def test_start_load_reports_a_rejection_as_load_does(open_prog: Opener) -> None:
    obj = open_prog()
    obj.set_autoload("rejected", True)
    obj.start_load()
    with pytest.raises(BpfLoadError) as info:
        obj.load()
    assert "invalid mem access 'ringbuf_mem_or_null'" in info.value.log_tail


@pytest.mark.kernel
def test_forget_log_leaves_a_working_object(open_prog: Opener) -> None:
    obj = open_prog()
    try:
        obj.set_rodata(config())
        obj.load()
        obj.attach_all()
        obj.forget_log()
        assert obj.log == ""
        with RingBuffer(obj.map_fd("rb"), obj.max_entries("rb")) as ring:
            spawn(1)
            assert ring.wait(5.0)
    finally:
        obj.close()


@pytest.mark.kernel
def test_loaded_probes_keep_no_log() -> None:
    """The agent's object, once attached, holds none of libbpf's messages:
    nothing reports them any more."""
    loaded = KernelProbes(Config())
    loaded.attach()
    try:
        assert loaded.obj.log == ""
    finally:
        loaded.close()


@pytest.mark.kernel
def test_the_default_ring_is_sized_for_the_reader_that_drains_it() -> None:
    """Without --ringbuf-bytes, the ring the kernel made (its map's fdinfo)
    is 2 MiB when the C extension drains it and 8 MiB when the pure-Python
    reference does (this suite's OTEL_EXEC_NATIVE=0 pass): the slower reader
    needs the larger ring to absorb the same burst (docs/operations.md#sizing)."""
    loaded = KernelProbes(Config())
    try:
        loaded.attach()
        fdinfo = Path(f"/proc/self/fdinfo/{loaded.ringbuf_fd}").read_text()
        made = int(next(line.split()[1] for line in fdinfo.splitlines() if line.startswith("max_entries:")))
        assert made == loaded.ringbuf_bytes == (2 << 20 if NATIVE is not None else 8 << 20)
    finally:
        loaded.close()


@pytest.mark.kernel
def test_probes_load_on_a_thread_that_attach_waits_out() -> None:
    """KernelProbes begins its load when made (the agent does the rest of
    its start meanwhile); attach() returns with the load's thread gone from
    /proc/self/task, as the privilege drop that follows needs, and the
    programs attached."""
    before = set(os.listdir("/proc/self/task"))
    loaded = KernelProbes(Config())
    try:
        loaded.attach()
        assert set(os.listdir("/proc/self/task")) <= before
        with RingBuffer(loaded.ringbuf_fd, loaded.ringbuf_bytes) as ring:
            # Through a shell that forks: the programs leave out the execs
            # of this process's own children.
            subprocess.run(["/bin/sh", "-c", "/bin/true; exit $?"], check=True)
            # Its records are in the ring once the shell has exited; the
            # programs wake a reader only at --wakeup-fraction of the ring,
            # so this looks at the ring itself rather than wait for a wake-up.
            assert ring.available_bytes() > 0
    finally:
        loaded.close()


@pytest.mark.kernel
def test_attach_before_load(open_prog: Opener) -> None:
    with pytest.raises(BpfError, match="attach before load"):
        open_prog().attach_all()


@pytest.mark.kernel
def test_records_counters_and_maps(loaded: BpfObject) -> None:
    pids = spawn(5)
    got: list[Rec] = []
    with RingBuffer(loaded.map_fd("rb"), RING_BYTES) as ring:
        assert ring.drain(lambda v: got.append(Rec.parse(v))) == 5
    assert [r.pid for r in got] == pids
    assert [r.seq for r in got] == list(range(5))
    assert {r.ppid for r in got} == {os.getpid()}
    assert {r.comm for r in got} == {b"true"}

    ncpus = num_possible_cpus()
    assert loaded.percpu_array_sum("counts", CNT_SEEN) == 5
    assert loaded.percpu_array_sum("counts", CNT_SEEN, ncpus) == 5
    assert loaded.percpu_array_sum("counts", CNT_RING_FULL) == 0
    with pytest.raises(BpfError, match="out of range"):
        loaded.percpu_array_sum("counts", 2)
    with pytest.raises(BpfError, match="Invalid argument"):
        loaded.percpu_array_sum("counts", 0, ncpus + 1)  # buffer of the wrong size

    # .bss is a one-element array holding the global "seq".
    assert loaded.map_lookup(BSS, KEY0, 8) == struct.pack("=Q", 5)
    assert loaded.map_lookup(BSS, struct.pack("=I", 1), 8) is None
    loaded.map_update(BSS, KEY0, struct.pack("=Q", 1000))
    with RingBuffer(loaded.map_fd("rb"), RING_BYTES) as ring:
        spawn(1)
        ring.drain(lambda v: got.append(Rec.parse(v)))
    assert got[-1].seq == 1000


@pytest.mark.kernel
def test_map_access_checks_sizes(loaded: BpfObject) -> None:
    with pytest.raises(BpfError, match=r"Invalid argument.*key_size 4, value_size 8"):
        loaded.map_lookup(BSS, b"\0\0", 8)
    with pytest.raises(BpfError, match="Invalid argument"):
        loaded.map_lookup(BSS, KEY0, 4)  # the kernel would write 8 bytes
    with pytest.raises(BpfError, match="Invalid argument"):
        loaded.map_update(BSS, KEY0, b"\1")


@pytest.mark.kernel
def test_map_access_needs_load(open_prog: Opener) -> None:
    obj = open_prog()
    with pytest.raises(BpfError, match="not loaded"):
        obj.map_fd("rb")
    with pytest.raises(BpfError, match="not loaded"):
        obj.map_lookup(BSS, KEY0, 8)


@pytest.mark.kernel
def test_close_detaches(open_prog: Opener) -> None:
    with open_prog() as obj:
        obj.set_rodata(config())
        obj.load()
        obj.attach_all()
        # The ring outlives the object: it holds its own fd of the map.
        ring = RingBuffer(obj.map_fd("rb"), RING_BYTES)
    obj.close()  # idempotent
    with pytest.raises(BpfError, match="closed"):
        obj.program_names()
    with ring:
        spawn(2)
        assert ring.drain(lambda v: None) == 0  # no program attached anymore
