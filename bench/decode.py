#!/usr/bin/env python3
"""Cost per exec of the reader thread's first two stages, decode and the
policy (otel_exec.core.decode, otel_exec.policy.stage), on realistic records.

    python3 bench/decode.py [ROUNDS]

Two workloads: a storm of one command (every record shares its shared part,
so only the per-exec work runs), and a build (every record has an argv of
its own, so the shared part, its argv block and its redaction are new each
time; the environment repeats). Prints the median and the best nanoseconds
per exec over ROUNDS rounds, each with a fresh decoder and policy, for the
Python reference (Decoder.decode) and, when built, the C decoder
(Decoder.native.decode, otel_exec.core._decode_native), rounds of the two
interleaved. Wall clock on a shared machine is noisy: compare runs made one
after the other.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_exec.core.decode import NATIVE_DECODER, Decoder  # noqa: E402
from otel_exec.host.identity import HostIdentity  # noqa: E402
from otel_exec.lineage.traceparent import trace_context_entries  # noqa: E402
from otel_exec.model import layout  # noqa: E402
from otel_exec.policy.redact import RedactionPolicy  # noqa: E402
from otel_exec.policy.stage import ExecPolicy  # noqa: E402

IDENTITY = HostIdentity(machine_id="bench", boot_id="bench", clk_tck=100,
                        realtime_minus_boottime_ns=1_700_000_000 * 10**9)
# bench/storm.py's environment: 16 variables, ~600 bytes.
ENV = [b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", b"HOME=/home/builder",
       b"USER=builder", b"LOGNAME=builder", b"SHELL=/bin/bash", b"LANG=C.UTF-8", b"TERM=xterm-256color",
       b"PWD=/home/builder/src/project", b"OLDPWD=/home/builder", b"SHLVL=2", b"HOSTNAME=build-runner-07",
       b"TMPDIR=/tmp", b"EDITOR=vi", b"CI=true", b"CI_JOB_ID=1234567890",
       b"CI_COMMIT_SHA=4bf92f3577b34da6a3ce929d0e0e4736aabbccdd"]


def leaf_first(path: bytes) -> bytes:
    return b"".join(c + b"\0" for c in reversed(path.strip(b"/").split(b"/")))


def exec_record(argv: list[bytes], pid: int) -> bytes:
    """struct oe_exec as the kernel writes it for `argv` run by `pid`."""
    strs = {"cmdpath": b"/usr/bin/cc\0", "interp": b"", "pathname": leaf_first(b"/usr/bin/x86_64-linux-gnu-gcc-12"),
            "interpreter": leaf_first(b"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            "stdin": leaf_first(b"/dev/pts/0"), "pwd": leaf_first(b"/home/builder/src/project"),
            "cgroup": leaf_first(b"/user.slice/user-1000.slice/session-1.scope"),
            "argv": b"".join(a + b"\0" for a in argv), "env": b"".join(e + b"\0" for e in ENV)}
    values: dict[str, object] = {name: (b"" if fmt.endswith("s") else 0) for name, fmt in layout.EXEC_MEMBERS}
    values.update({
        "hdr.type": layout.REC_EXEC, "start_boottime_ns": 123_456_789_012, "parent_start_boottime_ns": 12_345_678,
        "host_pid": pid, "host_tid": pid, "host_ppid": 1000, "image_ppid": 1000, "pid": pid, "tid": pid,
        "ppid": 1000, "cgroup_id": 4242, "file.inode": 777, "file.dev": 0x800001, "file.mode": 0o100755,
        "interpreter.inode": 778, "interpreter.dev": 0x800001, "stdin.inode": 3, "stdin.mode": 0o20620,
        "parent_exe.inode": 779, "parent_exe.dev": 0x800001, "uid": 1000, "gid": 1000, "euid": 1000,
        "egid": 1000, "mount_ns": 4026531841, "pid_ns": 4026531836, "argc": len(argv), "envc": len(ENV),
        "comm": b"cc", "prev_comm": b"make", "hostname": b"build-runner-07", "flags": layout.F_PREV_COMM_KNOWN})
    for i, name in enumerate(layout.STR_NAMES):
        values[f"str_len[{i}]"] = len(strs[name])
    values["hdr.size"] = layout.EXEC.size + sum(map(len, strs.values()))
    return layout.EXEC.pack(*(values[name] for name, _ in layout.EXEC_MEMBERS)) + b"".join(strs.values())


def ns_per_exec(records: list[bytes], rounds: int, repeat: int) -> dict[str, tuple[float, float]]:
    kinds = ["python"] + (["c"] if NATIVE_DECODER is not None else [])
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            decoder = Decoder(IDENTITY, native=NATIVE_DECODER if kind == "c" else None)
            decode = decoder.native.decode if kind == "c" else decoder.decode
            apply = ExecPolicy(RedactionPolicy(), 1, trace_context_entries).apply
            views = [memoryview(r) for r in records]
            t = time.perf_counter()
            for _ in range(repeat):
                for view in views:
                    apply(decode(view))  # type: ignore[arg-type]
            samples[kind].append((time.perf_counter() - t) / (repeat * len(views)) * 1e9)
    return {kind: (statistics.median(s), min(s)) for kind, s in samples.items()}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    storm = [exec_record([b"cc", b"--version"], 4000 + i) for i in range(1000)]
    build = [exec_record([b"cc", b"-O2", b"-c", b"src/file%d.c" % i, b"-o", b"build/file%d.o" % i], 4000 + i)
             for i in range(1000)]
    for name, records, repeat in (("storm of one command", storm, 5), ("build, an argv per exec", build, 1)):
        for kind, (median, best) in ns_per_exec(records, rounds, repeat).items():
            print(f"{name}, {kind} decoder: {median:.0f} ns/exec median, {best:.0f} best")


if __name__ == "__main__":
    main()
