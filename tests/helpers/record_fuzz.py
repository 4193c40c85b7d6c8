"""Records for the decoder's property tests, built from
otel_exec/model/layout.py (the mirror of bpf/otel_exec.h): hypothesis
strategies of well-formed exec and exit records with an independent oracle
of what each must decode to, and the mutations that damage them (bytes
flipped, size and string-length fields set to absurd values, records cut
short or extended). Shared by tests/core/test_decode_fuzz.py (the decoder's
contract) and tests/core/test_decode_native.py (the C decoder against the
Python one)."""
from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from otel_exec.model import layout
from tests.helpers.records import IDENTITY, block, build_exec, leaf_first


EXIT_NAMES = [name for name, _ in layout.EXIT_MEMBERS]
OFFSETS = layout.member_offsets(layout.EXEC_MEMBERS)
STR_LEN_OFFSETS = [OFFSETS[f"str_len[{i}]"] for i in range(len(layout.STR_NAMES))]
U32_OFFSETS = sorted({OFFSETS[n] for n, fmt in layout.EXEC_MEMBERS if fmt == "I"})
SIZE_OFFSET = OFFSETS["hdr.size"]
EXIT_CODE_OFFSET = layout.member_offsets(layout.EXIT_MEMBERS)["exit_code"]



def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
ANON_INODE_FS_MAGIC = 0x09041934


# -- building records ---------------------------------------------------------



def build_exit(**values: object) -> bytes:
    v: dict[str, object] = {name: (b"" if fmt.endswith("s") else 0) for name, fmt in layout.EXIT_MEMBERS}
    v.update({"hdr.type": layout.REC_EXIT, "hdr.size": layout.EXIT.size})
    v.update(values)
    return layout.EXIT.pack(*(v[name] for name in EXIT_NAMES))


def pflags_at(flags: int, path_idx: int) -> int:
    return flags >> (layout.F_PATH_SHIFT + layout.F_PATH_BITS * path_idx) & 7


def with_pflags(path_idx: int, pf: int) -> int:
    return pf << (layout.F_PATH_SHIFT + layout.F_PATH_BITS * path_idx)


# -- an independent oracle for valid records -----------------------------------

def esc(raw: bytes) -> str:
    """docs/fields.md, "Non-UTF-8 bytes"."""
    return raw.decode("utf-8", "backslashreplace")


def expect_path(components: list[bytes], pf: int, magic: int = 0, inode: int = 0) -> str:
    """docs/fields.md, "Paths": what user space makes of a leaf-first path."""
    if pf & layout.PF_DETACHED:
        name = esc(components[-1]) if components else ""
        if magic == PIPEFS_MAGIC:
            return f"pipe:[{inode}]"
        if magic == SOCKFS_MAGIC:
            return f"socket:[{inode}]"
        if magic == ANON_INODE_FS_MAGIC:
            return f"anon_inode:{name}"
        return f"/{name} (deleted)"
    path = "/" + "/".join(esc(c) for c in components)
    if pf & layout.PF_TRUNCATED:
        path = "..." + path
    if pf & layout.PF_DELETED:
        path += " (deleted)"
    return path


def expect_block(raw: bytes, cut: bool) -> list[str]:
    """docs/fields.md, "Truncation": the elements a (possibly cut) block
    holds whole; a cut block's partial last element is dropped."""
    out, start = [], 0
    while True:
        nul = raw.find(b"\0", start)
        if nul < 0:
            break
        out.append(esc(raw[start:nul]))
        start = nul + 1
    if start < len(raw) and not cut:
        out.append(esc(raw[start:]))
    return out


def dev_user(kdev: int) -> int:
    return os.makedev(kdev >> 20, kdev & 0xFFFFF)


# -- strategies ---------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
# Bytes that matter to the decoder's text handling: NUL, '/', '=', '\\',
# newlines, invalid and valid UTF-8 (incl. truncated multi-byte sequences).
interesting = st.sampled_from([b"\0", b"/", b"=", b"\\", b"\n", b"\xff", b"\xc3", b"\xc3\xa9", b"\xe2\x82",
                               b"\xf0\x9f\x98\x80", b"TRACEPARENT=", b"a", b"..", b" (deleted)"])
raw_text = st.one_of(st.binary(max_size=24), st.lists(interesting, max_size=6).map(b"".join))
no_nul = raw_text.map(lambda b: b.replace(b"\0", b"_"))
component = st.binary(min_size=1, max_size=16).map(lambda b: b.replace(b"\0", b"_").replace(b"/", b"_")) | \
    st.sampled_from([b"\xff\xfe", b"a\nb", b"'\"", b"\xc3(", b"x" * 255])
path = st.lists(component, max_size=6)
cstring = st.binary(max_size=16)


@st.composite
def exec_records(draw: st.DrawFn) -> tuple[bytes, dict]:
    """A well-formed exec record and what its decoding must give."""
    cmdpath, interp = draw(no_nul), draw(no_nul)
    pathname, interpreter, stdin, pwd, cgroup = (draw(path) for _ in range(5))
    has_interp = draw(st.booleans())
    s_mode = draw(st.sampled_from([0, 0o020620, 0o010600, 0o140777, 0o100644]))
    magic = draw(st.sampled_from([0, PIPEFS_MAGIC, SOCKFS_MAGIC, ANON_INODE_FS_MAGIC, 0x01021994]))
    argv, env = draw(st.lists(no_nul, max_size=8)), draw(st.lists(no_nul, max_size=8))
    argv_raw, env_raw = block(argv), block(env)
    argv_cut = draw(st.booleans()) and bool(argv_raw)
    env_cut = draw(st.booleans()) and bool(env_raw)
    if argv_cut:
        argv_raw = argv_raw[:draw(st.integers(0, len(argv_raw) - 1))]
    if env_cut:
        env_raw = env_raw[:draw(st.integers(0, len(env_raw) - 1))]
    flags = (layout.F_ARGV_TRUNCATED if argv_cut else 0) | (layout.F_ENV_TRUNCATED if env_cut else 0)
    flags |= draw(st.sampled_from([0, layout.F_INVOKED_FROM_KERNEL, layout.F_PREV_COMM_KNOWN,
                                   layout.F_CMDPATH_TRUNCATED | layout.F_INTERP_TRUNCATED,
                                   layout.F_ARGV_UNREADABLE | layout.F_ENV_UNREADABLE]))
    pfs = [draw(st.sampled_from([0, layout.PF_TRUNCATED, layout.PF_DELETED,
                                 layout.PF_TRUNCATED | layout.PF_DELETED])) for _ in layout.PATH_FIELDS]
    if not has_interp:
        interpreter, pfs[1] = [], 0
    if not s_mode:
        stdin, pfs[2] = [], 0
    elif draw(st.booleans()):
        pfs[2], stdin = layout.PF_DETACHED, stdin[-1:]  # a pseudo file: one name
    if draw(st.booleans()):
        pfs[0], pathname = layout.PF_DETACHED, pathname[-1:]  # e.g. a memfd
    for i, pf in enumerate(pfs):
        flags |= with_pflags(i, pf)
    v: dict[str, Any] = {
        "hdr.boot_ns": draw(u64), "start_boottime_ns": draw(u64), "parent_start_boottime_ns": draw(u64),
        "host_pid": draw(u32), "host_tid": draw(u32), "host_ppid": draw(u32), "old_tid": draw(u32),
        "image_ppid": draw(u32), "pid": draw(u32), "tid": draw(u32), "ppid": draw(u32),
        "cgroup_id": draw(u64),
        "file.inode": draw(u64), "file.ctime_ns": draw(u64), "file.dev": draw(u32), "file.mode": draw(u32),
        "interpreter.inode": draw(st.integers(1, 2**64 - 1)) if has_interp else 0,
        "interpreter.ctime_ns": draw(u64), "interpreter.dev": draw(u32), "interpreter.mode": draw(u32),
        "stdin.inode": draw(u64), "stdin.ctime_ns": draw(u64), "stdin.dev": draw(u32), "stdin.mode": s_mode,
        "parent_exe.inode": draw(u64), "parent_exe.ctime_ns": draw(u64), "parent_exe.dev": draw(u32),
        "parent_exe.mode": draw(u32),
        "stdin_fs_magic": magic, "uid": draw(u32), "gid": draw(u32), "euid": draw(u32), "egid": draw(u32),
        "mount_ns": draw(u32), "pid_ns": draw(u32), "argc": draw(u32), "envc": draw(u32), "flags": flags,
        "comm": draw(cstring), "prev_comm": draw(cstring), "hostname": draw(st.binary(max_size=65)),
    }
    strs = [cmdpath + b"\0", interp + b"\0", leaf_first(pathname), leaf_first(interpreter), leaf_first(stdin),
            leaf_first(pwd), leaf_first(cgroup), argv_raw, env_raw]
    rec = build_exec(strs, **v)

    def cstr(b: bytes) -> str:
        return esc(b.split(b"\0", 1)[0])

    truncated = [n for i, n in enumerate(layout.PATH_FIELDS) if pfs[i] & layout.PF_TRUNCATED]
    truncated += [n for n, bit in (("cmdpath", layout.F_CMDPATH_TRUNCATED), ("interp", layout.F_INTERP_TRUNCATED))
                  if flags & bit]
    want = {
        "pid": v["pid"], "tid": v["tid"], "ppid": v["ppid"], "host_pid": v["host_pid"],
        "host_tid": v["host_tid"], "host_ppid": v["host_ppid"], "image_ppid": v["image_ppid"],
        "timestamp": v["hdr.boot_ns"] + IDENTITY.realtime_minus_boottime_ns,
        "start_ticks": v["start_boottime_ns"] // (10**9 // IDENTITY.clk_tck),
        "uid": v["uid"], "gid": v["gid"], "euid": v["euid"], "egid": v["egid"],
        "comm": cstr(v["comm"]), "prev_comm": cstr(v["prev_comm"]) if flags & layout.F_PREV_COMM_KNOWN else "",
        "hostname": cstr(v["hostname"]), "mount_ns": v["mount_ns"], "pid_ns": v["pid_ns"],
        "cgroup_id": v["cgroup_id"],
        "cmdpath": esc(cmdpath), "interp": esc(interp),
        "pathname": expect_path(pathname, pfs[0]),
        "dev": dev_user(v["file.dev"]), "inode": v["file.inode"], "ctime": v["file.ctime_ns"],
        "inode_mode": v["file.mode"],
        "interpreter_pathname": expect_path(interpreter, pfs[1]) if has_interp else "",
        "interpreter_dev": dev_user(v["interpreter.dev"]) if has_interp else 0,
        "interpreter_inode": v["interpreter.inode"], "interpreter_ctime": v["interpreter.ctime_ns"],
        "stdin_type": s_mode & 0o170000,
        "stdin_path": expect_path(stdin, pfs[2], magic, v["stdin.inode"]) if s_mode else "",
        "pwd": expect_path(pwd, pfs[3]), "cgroup_path": expect_path(cgroup, pfs[4]),
        "argv": expect_block(argv_raw, argv_cut), "env": expect_block(env_raw, env_cut),
        "argv_truncated": argv_cut or bool(flags & layout.F_ARGV_UNREADABLE),
        "env_truncated": env_cut or bool(flags & layout.F_ENV_UNREADABLE),
        "invoked_from_kernel": bool(flags & layout.F_INVOKED_FROM_KERNEL),
        "argc": v["argc"], "envc": v["envc"], "path_truncated": truncated,
        "exec_id": IDENTITY.exec_id(v["host_pid"], v["start_boottime_ns"] // 10**7, dev_user(v["file.dev"]),
                                    v["file.inode"]),
        "parent_exec_id": IDENTITY.exec_id(v["image_ppid"], v["parent_start_boottime_ns"] // 10**7,
                                           dev_user(v["parent_exe.dev"]), v["parent_exe.inode"]),
        "parent_start_ticks": v["parent_start_boottime_ns"] // 10**7,
    }
    return rec, want


# Real wait statuses fit a C int; the rest is test_exit_status_with_bit_31_set.
int_status = st.integers(0, 2**31 - 1)


@st.composite
def exit_records(draw: st.DrawFn, exit_code: st.SearchStrategy[int] = int_status) -> bytes:
    return build_exit(**{"hdr.boot_ns": draw(u64), "start_boottime_ns": draw(u64), "pid": draw(u32),
                         "exit_code": draw(exit_code), "comm": draw(cstring)})


def fix_size(rec: bytearray) -> None:
    if len(rec) >= layout.HEADER.size:
        struct.pack_into("<I", rec, SIZE_OFFSET, len(rec))


def fix_strings(rec: bytearray) -> None:
    """Make str_len[] add up to the bytes after the fixed part (moving the
    difference into the last length), so the decoder gets past that check
    with lengths that cut the strings in odd places."""
    if len(rec) < layout.EXEC.size:
        return
    lens = [struct.unpack_from("<I", rec, o)[0] for o in STR_LEN_OFFSETS]
    rest = len(rec) - layout.EXEC.size - sum(lens[:-1])
    struct.pack_into("<I", rec, STR_LEN_OFFSETS[-1], rest % 2**32)


absurd_u32 = st.sampled_from([0, 1, 7, 8, 15, 16, 63, 64, 343, 344, 345, 4095, 4096, 65535, 131072, 131073,
                              2**31 - 1, 2**31, 2**32 - 1]) | u32
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("u32"), st.sampled_from([SIZE_OFFSET, *STR_LEN_OFFSETS, *U32_OFFSETS]), absurd_u32),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("type"), st.sampled_from([0, 1, 2, 3, 4, 2**32 - 1])),
    st.tuples(st.just("fix_size")),
    st.tuples(st.just("fix_strings")),
)


def mutate(rec: bytes, ops: list[tuple]) -> bytes:
    out = bytearray(rec)
    for op in ops:
        kind = op[0]
        if kind == "flip" and out:
            out[op[1] % len(out)] ^= op[2]
        elif kind == "u32" and len(out) >= op[1] + 4:
            struct.pack_into("<I", out, op[1], op[2])
        elif kind == "truncate":
            del out[op[1] % (len(out) + 1):]
        elif kind == "extend":
            out += op[1]
        elif kind == "type" and len(out) >= 4:
            struct.pack_into("<I", out, 0, op[1])
        elif kind == "fix_size":
            fix_size(out)
        elif kind == "fix_strings":
            fix_strings(out)
    return bytes(out)
