"""Exact cases of the record decoder, through Decoder.decode of records
built from otel_exec/model/layout.py: the boundaries and messages the
property tests (test_decode_fuzz.py) do not pin down: container ids of
each runtime's cgroup layout, the ring's padding limit, every DecodeError's
message, the memo bounds, and the sharing of decoded blocks.

Written against mutmut's survivors of otel_exec/core/decode.py
(docs/testing.md, "Mutation score of the pure modules").
"""
from __future__ import annotations

import logging
import os
import struct
from types import SimpleNamespace

import pytest

from otel_exec.core.decode import DecodeError, Decoder, native_for_layout
from otel_exec.model.blocks import BoundedCache
from otel_exec.model.events import Strings
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from otel_exec.host.identity import HostIdentity
from otel_exec.model import layout
from otel_exec.model.events import ExecEvent, ExitEvent, UnreportedExecEvent

IDENTITY = HostIdentity(machine_id="cases-machine", boot_id="cases-boot", clk_tck=100,
                        realtime_minus_boottime_ns=1_600_000_000 * 10**9)
TICK_NS = 10**7
HEX64 = "0123456789abcdef" * 4


def path_bytes(path: str) -> bytes:
    """"/a/b" as the kernel sends it: leaf first, each name NUL-ended."""
    return b"".join(name.encode() + b"\0" for name in reversed(path.strip("/").split("/")) if name)


MEMBER_OF_KEYWORD = {name.replace(".", "_"): name for name, _ in layout.EXEC_MEMBERS}


def exec_record(strings: dict[str, bytes] | None = None, **members: object) -> bytes:
    """struct oe_exec with the named members set (layout names, dots as
    underscores: file_inode for file.inode) and the named strings after it;
    str_len[] and hdr.size follow from the strings unless given."""
    strs = {"cmdpath": b"/bin/true\0", "interp": b"/bin/true\0", "pathname": path_bytes("/bin/true"),
            "argv": b"true\0", **(strings or {})}
    given = {MEMBER_OF_KEYWORD[name]: v for name, v in members.items()}
    values: list[object] = []
    for name, fmt in layout.EXEC_MEMBERS:
        if name.startswith("str_len["):
            value: object = len(strs.get(layout.STR_NAMES[int(name[8:-1])], b""))
        else:
            value = given.pop(name, b"" if fmt.endswith("s") else 0)
        values.append(value)
    body = b"".join(strs.get(name, b"") for name in layout.STR_NAMES)
    values[0] = values[0] or layout.REC_EXEC
    values[1] = values[1] or layout.EXEC.size + len(body)
    return layout.EXEC.pack(*values) + body


def exit_record(status: int = 0, **members: object) -> bytes:
    return layout.EXIT.pack(layout.REC_EXIT, layout.EXIT.size, members.get("boot_ns", 0),
                            members.get("start", 0), members.get("pid", 1), status, members.get("comm", b""))


def decode_exec(rec: bytes, decoder: Decoder | None = None) -> ExecEvent:
    ev = (decoder or Decoder(IDENTITY)).decode(memoryview(rec))
    assert isinstance(ev, ExecEvent)
    return ev


# -- container ids -------------------------------------------------------------

@pytest.mark.parametrize("cgroup,container", [
    (f"/system.slice/docker-{HEX64}.scope", HEX64),  # docker, systemd driver
    (f"/docker/{HEX64}", HEX64),  # docker, cgroupfs driver
    (f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{HEX64}.scope", HEX64),
    (f"/kubepods/besteffort/pod1/crio-{HEX64}.scope", HEX64),
    (f"/machine.slice/libpod-{HEX64}.scope", HEX64),
    # the leaf-most component naming a container wins
    (f"/docker/{'f' * 64}/nested/{HEX64}", HEX64),
    # podman's monitor runs in a cgroup named after the container: not in it
    (f"/machine.slice/libpod-conmon-{HEX64}.scope", None),
    (f"/machine.slice/libpod-{'e' * 64}.scope/conmon", "e" * 64),
    (f"/x/conmon-{HEX64}", None),
    (f"/docker/{HEX64[:63]}", None),  # 63 hex digits
    (f"/docker/{HEX64}0", None),  # 65
    (f"/docker/{HEX64.upper()}", None),
    (f"/docker/{HEX64}.scope.x", None),
    (f"/docker/x{HEX64}", None),
    (f"/docker/rkt-{HEX64}.scope", None),
    ("/user.slice/user-0.slice/session-1.scope", None),
    ("/", None),
])
def test_container_id_of_each_runtime_s_cgroup_layout(cgroup: str, container: str | None) -> None:
    ev = decode_exec(exec_record({"cgroup": path_bytes(cgroup)}))
    assert ev.cgroup_path == cgroup
    assert ev.container_id == container


# -- what a record may be ------------------------------------------------------

def test_up_to_seven_bytes_of_padding_and_not_eight() -> None:
    rec = exec_record({"argv": b"a\0b\0"})
    decoder = Decoder(IDENTITY)
    decode_exec(rec, decoder)  # its shared part is kept from the second sighting on
    want = decode_exec(rec, decoder)
    for pad in range(1, 8):
        assert decode_exec(rec + b"\xee" * pad, decoder) == want
    with pytest.raises(DecodeError, match=rf"^record says {len(rec)} bytes, {len(rec) + 8} were read$"):
        Decoder(IDENTITY).decode(rec + bytes(8))
    short = exec_record({"argv": b"a\0b\0"}, hdr_size=len(rec) + 1)
    with pytest.raises(DecodeError, match=rf"^record says {len(rec) + 1} bytes, {len(rec)} were read$"):
        Decoder(IDENTITY).decode(short)


@pytest.mark.parametrize("rtype", [layout.REC_EXIT, layout.REC_UNREPORTED_EXEC])
def test_padding_of_the_fixed_size_records(rtype: int) -> None:
    if rtype == layout.REC_EXIT:
        rec = exit_record(0x0100, pid=7, comm=b"sh")
    else:
        rec = layout.UNREPORTED_EXEC.pack(rtype, layout.UNREPORTED_EXEC.size, 5, 3 * TICK_NS, 7, 0)
    want = Decoder(IDENTITY).decode(rec)
    assert Decoder(IDENTITY).decode(rec + b"\xee" * 7) == want
    with pytest.raises(DecodeError, match="were read"):
        Decoder(IDENTITY).decode(rec + bytes(8))


@pytest.mark.parametrize("size", [0, 1, layout.HEADER.size - 1])
def test_a_record_shorter_than_its_header(size: int) -> None:
    with pytest.raises(DecodeError, match=rf"^record of {size} bytes is shorter than its header$"):
        Decoder(IDENTITY).decode(bytes(size))


@pytest.mark.parametrize("rtype", [0, 2, 5, 2**32 - 1])
def test_an_unknown_record_type(rtype: int) -> None:
    rec = layout.HEADER.pack(rtype, layout.HEADER.size, 0)
    with pytest.raises(DecodeError, match=rf"^unknown record type {rtype}$"):
        Decoder(IDENTITY).decode(rec)


def test_an_exec_record_shorter_than_its_fixed_part() -> None:
    size = layout.EXEC.size - 1
    rec = layout.HEADER.pack(layout.REC_EXEC, size, 0) + bytes(size - layout.HEADER.size)
    with pytest.raises(DecodeError, match=rf"^exec record of {size} bytes, needs at least {layout.EXEC.size}$"):
        Decoder(IDENTITY).decode(rec)
    # exactly the fixed part: every string empty
    ev = decode_exec(layout.HEADER.pack(layout.REC_EXEC, layout.EXEC.size, 0)
                     + bytes(layout.EXEC.size - layout.HEADER.size))
    assert (ev.argv, ev.env, ev.pathname, ev.cmdpath) == ([], [], "/", "")


def test_an_unreported_record_shorter_than_its_type() -> None:
    size = layout.UNREPORTED_EXEC.size
    rec = layout.HEADER.pack(layout.REC_UNREPORTED_EXEC, size - 1, 0) + bytes(size - 1 - layout.HEADER.size)
    with pytest.raises(DecodeError, match=rf"^record of {size - 1} bytes, its type needs {size}$"):
        Decoder(IDENTITY).decode(rec)


@pytest.mark.parametrize("extra", [-1, 1])
def test_string_lengths_that_do_not_add_up(extra: int) -> None:
    rec = bytearray(exec_record({"argv": b"true\0x\0"}))
    offset = layout.member_offsets(layout.EXEC_MEMBERS)[f"str_len[{layout.STR_ARGV}]"]
    struct.pack_into("<I", rec, offset, 7 + extra)
    held = len(rec) - layout.EXEC.size
    with pytest.raises(DecodeError, match=rf"^exec strings add up to {held + extra} bytes, record holds {held}$"):
        Decoder(IDENTITY).decode(bytes(rec))


def test_unreported_exec_record() -> None:
    rec = layout.UNREPORTED_EXEC.pack(layout.REC_UNREPORTED_EXEC, layout.UNREPORTED_EXEC.size, 5,
                                      3 * TICK_NS + TICK_NS - 1, 4321, 0)
    assert Decoder(IDENTITY).decode(rec) == UnreportedExecEvent(5 + IDENTITY.realtime_minus_boottime_ns, 4321, 3)


# -- fields --------------------------------------------------------------------

def test_every_field_of_one_exec() -> None:
    to_epoch = IDENTITY.realtime_minus_boottime_ns
    kdev, idev = (8 << 20) | 3, (259 << 20) | 1
    rec = exec_record(
        {"cmdpath": b"./run.sh\0", "interp": b"./run.sh\0", "pathname": path_bytes("/srv/app/run.sh"),
         "interpreter": path_bytes("/usr/bin/bash"), "stdin": path_bytes("/dev/pts/3"),
         "pwd": path_bytes("/srv/app"), "cgroup": path_bytes("/user.slice"),
         "argv": b"./run.sh\0-v\0", "env": b"HOME=/root\0LANG=C\0"},
        hdr_boot_ns=11, start_boottime_ns=7 * TICK_NS + 1, parent_start_boottime_ns=5 * TICK_NS + 2,
        host_pid=101, host_tid=102, host_ppid=103, old_tid=104, image_ppid=105, pid=1, tid=2, ppid=3,
        cgroup_id=77, file_inode=1001, file_ctime_ns=1002, file_dev=kdev, file_mode=0o100755,
        interpreter_inode=2001, interpreter_ctime_ns=2002, interpreter_dev=idev, interpreter_mode=0o100755,
        stdin_inode=3001, stdin_ctime_ns=3002, stdin_dev=5, stdin_mode=0o020620,
        parent_exe_inode=4001, parent_exe_ctime_ns=4002, parent_exe_dev=kdev, parent_exe_mode=0o100755,
        uid=1000, gid=1001, euid=0, egid=1003, mount_ns=4026531841, pid_ns=4026531836, argc=2, envc=2,
        flags=layout.F_PREV_COMM_KNOWN | layout.F_INVOKED_FROM_KERNEL,
        comm=b"run.sh\0junk", prev_comm=b"bash", hostname=b"node-1\0junk")
    ev = decode_exec(rec)
    dev, interp_dev = os.makedev(8, 3), os.makedev(259, 1)
    assert ev == ExecEvent(
        timestamp=11 + to_epoch, pid=1, tid=2, ppid=3, host_pid=101, host_tid=102, host_ppid=103, image_ppid=105,
        process_start_time=7 * TICK_NS + 1 + to_epoch, start_ticks=7,
        exec_id=IDENTITY.exec_id(101, 7, dev, 1001), parent_exec_id=IDENTITY.exec_id(105, 5, dev, 4001),
        uid=1000, gid=1001, euid=0, egid=1003, comm="run.sh", prev_comm="bash", pwd="/srv/app",
        mount_ns=4026531841, pid_ns=4026531836, cgroup_id=77, cgroup_path="/user.slice", container_id=None,
        hostname="node-1", cmdpath="./run.sh", pathname="/srv/app/run.sh", dev=dev, inode=1001, ctime=1002,
        inode_mode=0o100755, interpreter_pathname="/usr/bin/bash", interpreter_dev=interp_dev,
        interpreter_inode=2001, interpreter_ctime=2002, argv=["./run.sh", "-v"], interp="./run.sh",
        stdin_type=0o020000, stdin_path="/dev/pts/3", invoked_from_kernel=True, env=["HOME=/root", "LANG=C"],
        argv_truncated=False, env_truncated=False, argc=2, envc=2, path_truncated=[], sample_rate=None,
        shared=ev.shared, unavailable=(), parent_start_ticks=5)


def test_fields_of_an_exec_without_interpreter_stdin_or_known_parent() -> None:
    rec = exec_record({"interpreter": path_bytes("/usr/bin/bash"), "stdin": path_bytes("/dev/null")},
                      interpreter_dev=(8 << 20) | 1, interpreter_ctime_ns=9, stdin_inode=4,
                      parent_exe_inode=4001, parent_exe_dev=1,
                      flags=layout.F_PARENT_EXE_UNKNOWN, comm=b"true", prev_comm=b"bash")
    ev = decode_exec(rec)
    # no interpreter inode: no interpreter, whatever else the record holds
    assert (ev.interpreter_pathname, ev.interpreter_dev, ev.interpreter_inode) == ("", 0, 0)
    assert (ev.stdin_type, ev.stdin_path) == (0, "")  # no stdin mode: nothing open
    assert ev.prev_comm == ""  # not known: the comm of the same task is not guessed
    assert ev.parent_exec_id == ""  # the agent takes it from its process table


@pytest.mark.parametrize("flags,argv_truncated,env_truncated", [
    (layout.F_ARGV_UNREADABLE, True, False),
    (layout.F_ENV_UNREADABLE, False, True),
    (layout.F_ARGV_TRUNCATED, True, False),
    (layout.F_ENV_TRUNCATED, False, True),
])
def test_truncation_and_unreadable_flags(flags: int, argv_truncated: bool, env_truncated: bool) -> None:
    ev = decode_exec(exec_record({"argv": b"a\0b", "env": b"X=1\0Y"}, flags=flags))
    assert (ev.argv_truncated, ev.env_truncated) == (argv_truncated, env_truncated)
    # a cut block loses its partial last element; a block not cut keeps it
    assert ev.argv == (["a"] if flags & layout.F_ARGV_TRUNCATED else ["a", "b"])
    assert ev.env == (["X=1"] if flags & layout.F_ENV_TRUNCATED else ["X=1", "Y"])


def test_every_path_flag_names_its_path() -> None:
    def pf(i: int, bits: int) -> int:
        return bits << (layout.F_PATH_SHIFT + layout.F_PATH_BITS * i)

    flags = layout.F_CMDPATH_TRUNCATED | layout.F_INTERP_TRUNCATED
    for i in range(len(layout.PATH_FIELDS)):
        flags |= pf(i, layout.PF_TRUNCATED)
    strings = {name: path_bytes("/a/b") for name in ("pathname", "interpreter", "stdin", "pwd", "cgroup")}
    ev = decode_exec(exec_record(strings, interpreter_inode=1, stdin_mode=0o100644, flags=flags))
    assert ev.path_truncated == [*layout.PATH_FIELDS, "cmdpath", "interp"]
    assert [ev.pathname, ev.interpreter_pathname, ev.stdin_path, ev.pwd, ev.cgroup_path] == [".../a/b"] * 5
    one = decode_exec(exec_record(strings, interpreter_inode=1, stdin_mode=0o100644,
                                  flags=pf(3, layout.PF_DELETED) | layout.F_INTERP_TRUNCATED))
    assert one.path_truncated == ["interp"]
    assert (one.pwd, one.pathname, one.stdin_path) == ("/a/b (deleted)", "/a/b", "/a/b")


@pytest.mark.parametrize("magic,inode,want", [
    (0x50495045, 812, "pipe:[812]"),
    (0x534F434B, 813, "socket:[813]"),
    (0x09041934, 814, "anon_inode:[eventfd]"),
    (0x01021994, 815, "/memfd:x (deleted)"),  # tmpfs: simple_dname()
])
def test_a_detached_stdin_is_named_as_d_path_names_it(magic: int, inode: int, want: str) -> None:
    name = b"[eventfd]" if magic == 0x09041934 else b"memfd:x"
    flags = layout.PF_DETACHED << (layout.F_PATH_SHIFT + layout.F_PATH_BITS * 2)
    ev = decode_exec(exec_record({"stdin": name + b"\0"}, stdin_mode=0o010600, stdin_inode=inode,
                                 stdin_fs_magic=magic, flags=flags))
    assert (ev.stdin_path, ev.stdin_type) == (want, 0o010000)


def test_a_detached_executable_is_a_deleted_file_whatever_its_file_system() -> None:
    flags = layout.PF_DETACHED << layout.F_PATH_SHIFT
    ev = decode_exec(exec_record({"pathname": b"memfd:payload\0"}, stdin_fs_magic=0x50495045, file_inode=9,
                                 flags=flags))
    assert ev.pathname == "/memfd:payload (deleted)"
    assert decode_exec(exec_record({"pathname": b""}, flags=flags)).pathname == "/ (deleted)"


def test_invalid_utf8_becomes_escapes() -> None:
    ev = decode_exec(exec_record({"argv": b"caf\xc3\xa9\0\xff\xfe\0", "pathname": b"\xe9\0" + path_bytes("/tmp")},
                                 comm=b"\xffx"))
    assert ev.argv == ["caf\u00e9", "\\xff\\xfe"]
    assert ev.pathname == "/tmp/\\xe9"
    assert ev.comm == "\\xffx"


def test_start_times_are_cut_to_whole_ticks() -> None:
    ev = decode_exec(exec_record(start_boottime_ns=TICK_NS - 1, parent_start_boottime_ns=2 * TICK_NS - 1))
    assert (ev.start_ticks, ev.parent_start_ticks) == (0, 1)


# -- exit records --------------------------------------------------------------

def test_exit_record_fields() -> None:
    ev = Decoder(IDENTITY).decode(exit_record(0x8B, boot_ns=3, start=4 * TICK_NS + TICK_NS - 1, pid=99,
                                              comm=b"crash\0x"))
    assert ev == ExitEvent(3 + IDENTITY.realtime_minus_boottime_ns, 99, 4, None, 11, True, "crash")


def test_an_exit_status_with_bits_over_16_keeps_the_exit_code_byte() -> None:
    ev = Decoder(IDENTITY).decode(exit_record(0x1_0300))
    assert isinstance(ev, ExitEvent) and ev.exit_code == 3 and ev.signal is None


# -- memos ---------------------------------------------------------------------

def remember_twice(cache: BoundedCache, key: object, value: object, weight: int = 0) -> None:
    """A value is kept from the second time its key is remembered on."""
    cache.remember(key, value, weight)
    cache.remember(key, value, weight)


def test_a_bounded_cache_keeps_a_value_from_the_second_time_on() -> None:
    cache = BoundedCache(max_entries=3, max_bytes=100)
    cache.remember("a", "A", 10)
    assert dict(cache) == {} and cache.bytes == 0 and cache.seen_once == {hash("a")}
    cache.remember("a", "A", 10)
    assert dict(cache) == {"a": "A"} and cache.bytes == 10 and cache.seen_once == set()
    # Keys seen once are bounded too: the fourth empties the set.
    for key in "bcde":
        cache.remember(key, key.upper(), 1)
    assert dict(cache) == {"a": "A"} and cache.seen_once == {hash("e")}
    cache.remember("b", "B", 1)  # forgotten: once again
    assert dict(cache) == {"a": "A"} and cache.seen_once == {hash("e"), hash("b")}


def test_a_bounded_cache_empties_once_it_holds_max_entries() -> None:
    cache = BoundedCache(max_entries=3, max_bytes=100)
    for key in "abc":
        remember_twice(cache, key, key.upper(), 10)
    assert dict(cache) == {"a": "A", "b": "B", "c": "C"} and cache.bytes == 30
    remember_twice(cache, "d", "D", 5)
    assert dict(cache) == {"d": "D"} and cache.bytes == 5


def test_a_bounded_cache_empties_once_its_weight_would_pass_max_bytes() -> None:
    cache = BoundedCache(max_entries=100, max_bytes=30)
    remember_twice(cache, "a", 1, 10)
    remember_twice(cache, "b", 2, 20)  # exactly max_bytes: kept
    assert dict(cache) == {"a": 1, "b": 2} and cache.bytes == 30
    remember_twice(cache, "c", 3, 1)
    assert dict(cache) == {"c": 3} and cache.bytes == 1
    remember_twice(cache, "d", 4, 40)  # heavier than the bound on its own: kept alone
    assert dict(cache) == {"d": 4} and cache.bytes == 40


def test_a_bounded_cache_s_default_bounds() -> None:
    cache = BoundedCache()
    for i in range(1024):
        remember_twice(cache, i, i)
    assert len(cache) == 1024
    remember_twice(cache, "next", 0)
    assert list(cache) == ["next"]
    remember_twice(cache, "half", 0, 1 << 20)
    remember_twice(cache, "rest", 0, 1 << 20)
    assert len(cache) == 3 and cache.bytes == 2 << 20
    remember_twice(cache, "one more", 0, 1)
    assert list(cache) == ["one more"]
    for i in range(1024):
        cache.remember(("once", i), i)
    assert len(cache.seen_once) == 1024
    cache.remember("next once", 0)
    assert cache.seen_once == {hash("next once")}


def test_identical_blocks_decode_to_one_shared_instance() -> None:
    decoder = Decoder(IDENTITY)
    once = decode_exec(exec_record({"argv": b"make\0-j8\0", "env": b"A=1\0"}, pid=0), decoder)
    first = decode_exec(exec_record({"argv": b"make\0-j8\0", "env": b"A=1\0"}, pid=1), decoder)
    # Seen once, a block is decoded and not kept (a one-off exec's would fill the memo).
    assert once.argv == first.argv and once.argv is not first.argv
    again = decode_exec(exec_record({"argv": b"make\0-j8\0", "env": b"A=1\0"}, pid=2, cgroup_id=9), decoder)
    assert again.argv is first.argv and again.env is first.env
    assert type(first.argv) is Strings and type(first.env) is Strings  # where lineage keeps the trace context
    assert again.shared is not first.shared  # another shared part (cgroup id), the same blocks
    same = decode_exec(exec_record({"argv": b"make\0-j8\0", "env": b"A=1\0"}, pid=3), decoder)
    assert same.shared is first.shared and (same.pid, first.pid) == (3, 1)
    # a cut block is another block, even with the same bytes
    cut = decode_exec(exec_record({"argv": b"make\0-j8\0", "env": b"A=1\0"}, pid=4,
                                  flags=layout.F_ARGV_TRUNCATED), decoder)
    assert cut.argv == first.argv and cut.argv is not first.argv


@pytest.mark.parametrize("string,field", [("argv", "argv"), ("env", "env"), ("pwd", "pwd"), ("pathname", "pathname"),
                                          ("cgroup", "cgroup_path")])
def test_the_memos_of_blocks_and_paths_are_bounded_by_twice_the_raw_bytes(string: str, field: str) -> None:
    """2 MiB of weight, each block or path weighing twice its raw bytes:
    eight of 128 KiB fill a memo, the ninth empties it (and one decoded
    again is another instance). Each exec has its own cgroup id, so that
    its shared part is decoded anew and looks its strings up."""
    decoder = Decoder(IDENTITY)
    cgroup_ids = iter(range(1, 100))
    raws = [b"%08d" % i + b"x" * (128 * 1024 - 9) + b"\0" for i in range(9)]

    def decoded(raw: bytes) -> object:
        # pathname and pwd share one memo: the other one empty (no weight)
        strings = {"pathname": b"", string: raw}
        return getattr(decode_exec(exec_record(strings, cgroup_id=next(cgroup_ids)), decoder), field)

    for raw in raws[:8]:
        decoded(raw)  # seen once: kept from the next time on
    first = [decoded(raw) for raw in raws[:8]]
    assert all(decoded(raw) is value for raw, value in zip(raws, first))
    decoded(raws[8])
    decoded(raws[8])
    again = decoded(raws[1])
    assert again == first[1] and again is not first[1]


def test_the_shared_part_memo_is_weighed_at_three_times_its_bytes() -> None:
    """The shared part (everything from cgroup_id on) of a 128 KiB env
    weighs 3 x its bytes against 2 MiB: five fit, the sixth empties it."""
    decoder = Decoder(IDENTITY)
    env = [b"%04d" % i + b"y" * (128 * 1024 - 5) + b"\0" for i in range(6)]
    for e in env[:5]:
        decode_exec(exec_record({"env": e}), decoder)  # seen once: kept from the next time on
    first = [decode_exec(exec_record({"env": e}, pid=i), decoder) for i, e in enumerate(env[:5])]
    assert all(decode_exec(exec_record({"env": e}), decoder).shared is f.shared for e, f in zip(env, first))
    decode_exec(exec_record({"env": env[5]}), decoder)
    decode_exec(exec_record({"env": env[5]}), decoder)
    assert decode_exec(exec_record({"env": env[0]}), decoder).shared is not first[0].shared


def test_parent_exec_ids_are_remembered_per_parent() -> None:
    decoder = Decoder(IDENTITY)
    ids = {}
    for ppid, pstart, dev, inode in [(5, TICK_NS, 1, 2), (5, 2 * TICK_NS, 1, 2), (6, TICK_NS, 1, 2),
                                     (5, TICK_NS, 3, 2), (5, TICK_NS, 1, 4), (5, TICK_NS, 1, 2)]:
        ev = decode_exec(exec_record(image_ppid=ppid, parent_start_boottime_ns=pstart, parent_exe_dev=dev,
                                     parent_exe_inode=inode), decoder)
        assert ev.parent_exec_id == IDENTITY.exec_id(ppid, pstart // TICK_NS, os.makedev(0, dev), inode)
        ids[(ppid, pstart, dev, inode)] = ev.parent_exec_id
    assert len(set(ids.values())) == 5
    # worked out once per parent: a storm of one shell's children reuses it
    again = decode_exec(exec_record(image_ppid=5, parent_start_boottime_ns=TICK_NS, parent_exe_dev=1,
                                    parent_exe_inode=2, pid=77), decoder)
    assert again.parent_exec_id is ids[(5, TICK_NS, 1, 2)]


def test_paths_and_cgroups_are_remembered_with_their_flags() -> None:
    """The same bytes with other path flags are another path."""
    decoder = Decoder(IDENTITY)
    cut = layout.PF_TRUNCATED << (layout.F_PATH_SHIFT + layout.F_PATH_BITS * 4)
    decode_exec(exec_record({"cgroup": path_bytes(f"/docker/{HEX64}"), "pwd": path_bytes("/w")}), decoder)  # seen once
    plain = decode_exec(exec_record({"cgroup": path_bytes(f"/docker/{HEX64}"), "pwd": path_bytes("/w")}), decoder)
    trunc = decode_exec(exec_record({"cgroup": path_bytes(f"/docker/{HEX64}"), "pwd": path_bytes("/w")},
                                    flags=cut | (layout.PF_DELETED << (layout.F_PATH_SHIFT + 3 * 3))), decoder)
    assert (plain.cgroup_path, plain.pwd) == (f"/docker/{HEX64}", "/w")
    assert (trunc.cgroup_path, trunc.pwd) == (f".../docker/{HEX64}", "/w (deleted)")
    assert trunc.container_id == plain.container_id == HEX64
    # each worked out once: another exec from the same cwd and cgroup (its own
    # shared part: another cgroup id) reuses them
    strings = {"cgroup": path_bytes(f"/docker/{HEX64}"), "pwd": path_bytes("/w"), "stdin": path_bytes("/dev/pts/0")}
    tty = 0o020620
    decode_exec(exec_record(strings, cgroup_id=3, stdin_mode=tty), decoder)  # stdin's path seen once
    once = decode_exec(exec_record(strings, cgroup_id=4, stdin_mode=tty), decoder)
    again = decode_exec(exec_record(strings, cgroup_id=5, stdin_mode=tty), decoder)
    assert again.shared is not plain.shared and again.shared is not once.shared
    assert again.pwd is plain.pwd and again.pathname is plain.pathname
    assert again.stdin_path is once.stdin_path == "/dev/pts/0"
    assert again.cgroup_path is plain.cgroup_path and again.container_id is plain.container_id


def test_a_block_is_decoded_once_and_redacted_once_by_the_policy() -> None:
    """Identical blocks decode to one shared list (from their second
    sighting on), which the policy stage
    redacts in place the first time: its result is the event's list, and
    the trace context is read before redaction."""
    calls: list[list[str]] = []

    class Upper:
        def argv(self, argv: list[str]) -> list[str]:
            return [a.upper() for a in argv]

        def env(self, env: list[str]) -> list[str]:
            calls.append(list(env))
            return [e if not e.startswith("TOKEN=") else "TOKEN=x" for e in env]

    decoder = Decoder(IDENTITY)
    policy = ExecPolicy(Upper(), 1, lambda env: {"TRACEPARENT": "00-1-2-01"})  # type: ignore[arg-type]
    env = b"TOKEN=hunter2\0A=1\0"
    decode_exec(exec_record({"argv": b"make\0", "env": env}, cgroup_id=0), decoder)  # seen once: not kept
    first = decode_exec(exec_record({"argv": b"make\0", "env": env}, cgroup_id=1), decoder)
    second = decode_exec(exec_record({"argv": b"make\0", "env": env}, cgroup_id=2), decoder)
    policy.apply(first)
    policy.apply(second)
    assert first.argv == ["MAKE"] and first.env == ["TOKEN=x", "A=1"]
    assert type(first.argv) is Strings
    assert first.env.trace_context == {"TRACEPARENT": "00-1-2-01"}
    assert second.env is first.env and calls == [["TOKEN=hunter2", "A=1"]]


@pytest.mark.parametrize("rate,flags,sample_rate", [
    (2, 0, 1),  # kept by a keep rule while sampling 1 in 2: counts once
    (2, layout.F_SAMPLED, 2),
    (1, layout.F_SAMPLED, None),  # no sampling (the kernel never sets the flag then): no sample rate
    (1, 0, None),
])
def test_the_sample_rate_of_an_exec(rate: int, flags: int, sample_rate: int | None) -> None:
    ev = decode_exec(exec_record(flags=flags), Decoder(IDENTITY))
    ExecPolicy(RedactionPolicy(), rate, lambda env: {}).apply(ev)
    assert ev.sample_rate == sample_rate


# bpf/otel_exec.h's values, written out: what the C decoder
# (otel_exec/core/_decode_native.c) must say it was built for.
BUILT_FOR = {
    "REC_EXEC": 1, "REC_EXIT": 3, "HEADER": 16, "EXEC": 344, "EXEC_SHARED_OFFSET": 64, "EXIT": 48,
    "PF_TRUNCATED": 1, "PF_DELETED": 2, "PF_DETACHED": 4,
    "PIPEFS_MAGIC": 0x50495045, "SOCKFS_MAGIC": 0x534F434B, "ANON_INODE_FS_MAGIC": 0x09041934,
    "EXEC_MEMBERS": {"hdr.boot_ns": 8, "start_boottime_ns": 16, "parent_start_boottime_ns": 24, "host_pid": 32,
                     "host_tid": 36, "host_ppid": 40, "image_ppid": 48, "pid": 52, "tid": 56, "ppid": 60},
    "EXIT_MEMBERS": {"hdr.boot_ns": 8, "start_boottime_ns": 16, "pid": 24, "exit_code": 28, "comm": 32},
    "EXEC_EVENT_PER_EXEC": ("timestamp", "pid", "tid", "ppid", "host_pid", "host_tid", "host_ppid", "image_ppid",
                            "process_start_time", "start_ticks", "exec_id", "parent_exec_id", "sample_rate", "shared",
                            "unavailable", "parent_start_ticks", "observed", "executable_identity",
                            "script_identity"),
    "EXIT_EVENT": ("timestamp", "pid", "start_ticks", "exit_code", "signal", "core_dumped", "comm"),
}


def test_the_c_decoder_is_used_only_when_built_for_this_layout(caplog: pytest.LogCaptureFixture) -> None:
    built = SimpleNamespace(LAYOUT=BUILT_FOR)
    assert native_for_layout(built) is built
    assert native_for_layout(None) is None
    assert not caplog.records
    variants = []
    for key, value in BUILT_FOR.items():
        if isinstance(value, dict):
            variants += [{**BUILT_FOR, key: {**value, member: offset + 1}} for member, offset in value.items()]
            variants.append({**BUILT_FOR, key: {**value, "no_such_member": 0}})
        elif isinstance(value, tuple):
            variants += [{**BUILT_FOR, key: value[:-1]}, {**BUILT_FOR, key: (*value, "extra")}]
        else:
            variants.append({**BUILT_FOR, key: value + 1})
    for layout_built in variants:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert native_for_layout(SimpleNamespace(LAYOUT=layout_built)) is None
        assert [r.getMessage() for r in caplog.records] == [
            "the C decoder was built for another record layout or other event fields than "
            "otel_exec/model/layout.py's and events.py's; the Python decoder runs (rebuild the extension)"]
