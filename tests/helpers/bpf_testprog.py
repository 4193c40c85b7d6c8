"""A tiny BPF test program for test_libbpf.py and test_ringbuf.py.

It is compiled once per session against this kernel's BTF and reports, into a
small ring buffer, every exec by a child of the test process. Test modules
load this file as a plugin (``pytest_plugins``) for its fixtures, which skip
per test (see tests/helpers/kernel_guard.py) without root or kernel BTF.

PYTEST_DONT_REWRITE: the test modules import helpers from here before pytest
loads it as a plugin, too late to rewrite asserts (there are none here).
"""
from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_exec.core.libbpf import BpfObject

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
OBJ_NAME = "oe_test"  # libbpf names the .bss map "oe_test.bss"
RING_BYTES = 4 * 4096  # the source's default size of map "rb"

# struct rec below. pad[i] = (seq + i) & 0xff, so a record torn at the ring's
# wrap point shows up as a bad pad.
REC = struct.Struct("=IIQ16s176s")
CNT_SEEN, CNT_RING_FULL = 0, 1  # indexes of map "counts"

TEST_PROG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct test_config {
	__u32 target_tgid;      /* report execs of children of this process */
	__u32 discard_every;    /* discard records whose seq % this == 0 */
};
const volatile struct test_config cfg = {};

struct rec {
	__u32 pid;
	__u32 ppid;
	__u64 seq;
	char comm[16];
	__u8 pad[176];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 4096);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);   /* 0: execs seen, 1: ring full */
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

__u64 seq;

static void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &idx);
	if (c)
		*c += 1;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 ppid = BPF_CORE_READ(p, real_parent, tgid);
	if (ppid != cfg.target_tgid)
		return 0;
	count(0);
	struct rec *r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);
	if (!r) {
		count(1);
		return 0;
	}
	r->seq = __sync_fetch_and_add(&seq, 1);
	r->pid = BPF_CORE_READ(p, tgid);
	r->ppid = ppid;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	for (int i = 0; i < sizeof(r->pad); i++)
		r->pad[i] = (__u8)(r->seq + i);
	if (cfg.discard_every && r->seq % cfg.discard_every == 0)
		bpf_ringbuf_discard(r, 0);
	else
		bpf_ringbuf_submit(r, 0);
	return 0;
}

/* "?": autoload off. Writes to a reservation without a NULL check, which the
 * verifier must reject (a constant-key array lookup would not do: newer
 * verifiers know it cannot fail). */
SEC("?tp_btf/sched_process_exec")
int BPF_PROG(rejected, struct task_struct *p)
{
	struct rec *r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);
	r->pid = 1;
	bpf_ringbuf_submit(r, 0);
	return 0;
}
"""


@dataclass(frozen=True)
class Rec:
    pid: int
    ppid: int
    seq: int
    comm: bytes
    pad: bytes

    @classmethod
    def parse(cls, payload: memoryview) -> Rec:
        pid, ppid, seq, comm, pad = REC.unpack_from(payload)
        return cls(pid, ppid, seq, comm.rstrip(b"\0"), pad)

    def pad_ok(self) -> bool:
        return self.pad == bytes((self.seq + i) & 0xFF for i in range(len(self.pad)))


def config(discard_every: int = 0) -> bytes:
    """The packed struct test_config: children of this process."""
    return struct.pack("=II", os.getpid(), discard_every)


def spawn(n: int) -> list[int]:
    """Run /bin/true n times, one after the other; the pids.

    The exec record is committed inside execve(), so it is in the ring by
    the time wait() returns.
    """
    pids = []
    for _ in range(n):
        proc = subprocess.Popen(["/bin/true"])
        proc.wait()
        pids.append(proc.pid)
    return pids


def build(d: Path, name: str, source: str) -> Path:
    """source compiled against this kernel's BTF into d/<name>.bpf.o."""
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    if not VMLINUX_BTF.exists():
        pytest.skip(f"needs kernel BTF ({VMLINUX_BTF})")
    for tool in ("clang", "bpftool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to build the test BPF program")
    with open(d / "vmlinux.h", "wb") as out:
        subprocess.run(["bpftool", "btf", "dump", "file", str(VMLINUX_BTF), "format", "c"],
                       stdout=out, check=True)
    src = d / f"{name}.bpf.c"
    src.write_text(source)
    obj = d / f"{name}.bpf.o"
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-Wall",
                    f"-I{d}", "-c", str(src), "-o", str(obj)], check=True)
    return obj


@pytest.fixture(scope="session")
def bpf_prog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("bpf_testprog"), OBJ_NAME, TEST_PROG)


@pytest.fixture
def open_prog(bpf_prog_path: Path) -> Iterator[Callable[[], BpfObject]]:
    """Opens the test object (not loaded); each one is closed after the test."""
    opened: list[BpfObject] = []

    def _open() -> BpfObject:
        obj = BpfObject(str(bpf_prog_path))
        opened.append(obj)
        return obj

    yield _open
    for obj in opened:
        obj.close()


@pytest.fixture
def loaded(open_prog: Callable[[], BpfObject]) -> BpfObject:
    """The test object configured for this process's children, loaded and attached."""
    obj = open_prog()
    obj.set_rodata(config())
    obj.load()
    obj.attach_all()
    return obj
