"""Native helper programs for the kernel tests, and helpers around them.

The C sources live in tests/progs/ (each file's header comment gives its
argument convention).  The session-scoped ``progs`` fixture (re-exported by
tests/conftest.py) builds them once per session with
``make -C tests/progs OUT=<session tmp dir>`` and returns a :class:`Progs`
whose attributes are absolute paths (str)::

    def test_something(progs):
        subprocess.run([progs.exec_argv, progs.print_argv, "argv0", ""])
        progs["dyn_true"]          # item access works too

Other helpers:
  elf_interp(path)      PT_INTERP of an ELF file (None for static binaries)
  decode_bytes(s)       exact bytes of a string printed by print_argv /
                        execveat_unlinked (latin-1 convention, see json.h)
  run_with_fd3(argv)    run argv with a pipe on fd 3, return (completed, data)
  popen_with_fd3(argv)  same, but returns (Popen, read_fd) at once
"""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import threading

import pytest

PROGS_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "progs")

PT_INTERP = 3
PN_XNUM = 0xFFFF


@dataclasses.dataclass(frozen=True)
class Progs:
    """Absolute paths of the built programs (see tests/progs/*.c)."""

    dir: str
    static_true: str  # -static, exits 0, no PT_INTERP
    dyn_true: str  # dynamically linked, exits 0
    thread_exec: str  # thread_exec PATH [ARGS...]
    memfd_exec: str  # memfd_exec SRC [ARGS...]
    execveat_unlinked: str  # execveat_unlinked SRC DIR ARG0 [ARGS...]
    exec_argv: str  # exec_argv [--env-file F] [--argc0] [--] PATH [ARGV...]
    print_argv: str  # prints {"pid","argc","argv","env","cmdline","exe","execfn"}
    print_ids: str  # prints "uid gid euid egid"
    crash: str  # dies of SIGSEGV, core dump enabled

    def __getitem__(self, name: str) -> str:
        return getattr(self, name)

    def names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name != "dir"]


class ProgsBuildError(RuntimeError):
    pass


def build_progs(out_dir: str | os.PathLike) -> Progs:
    """Build all programs into out_dir (made absolute); raise
    ProgsBuildError with make's output on failure."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    cmd = ["make", "-C", PROGS_SRC, f"OUT={out_dir}"]
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProgsBuildError(f"{' '.join(cmd)}: {e}") from e
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise ProgsBuildError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{output}"
        )
    paths = {
        f.name: os.path.join(out_dir, f.name)
        for f in dataclasses.fields(Progs)
        if f.name != "dir"
    }
    missing = [p for p in paths.values() if not os.access(p, os.X_OK)]
    if missing:
        raise ProgsBuildError(f"make succeeded but missing: {missing}\n{output}")
    return Progs(dir=out_dir, **paths)


@pytest.fixture(scope="session")
def progs(tmp_path_factory) -> Progs:
    """Build tests/progs once per session; fail the test with make's
    output if that does not work."""
    try:
        return build_progs(tmp_path_factory.mktemp("progs"))
    except ProgsBuildError as e:
        pytest.fail(str(e), pytrace=False)


def elf_interp(path: str | os.PathLike) -> str | None:
    """The PT_INTERP string of the ELF file at path (e.g.
    "/lib64/ld-linux-x86-64.so.2"), or None if it has no PT_INTERP (static
    binaries, static-pie, shared libraries).  Raises ValueError if the file
    is not ELF.  Non-UTF-8 bytes are decoded with os.fsdecode."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            raise ValueError(f"{path}: not an ELF file")
        ei_class, ei_data = ident[4], ident[5]
        if ei_class not in (1, 2) or ei_data not in (1, 2):
            raise ValueError(f"{path}: bad ELF class/data {ei_class}/{ei_data}")
        end = "<" if ei_data == 1 else ">"
        is64 = ei_class == 2
        if is64:
            # e_type..e_shstrndx after e_ident
            hdr = struct.Struct(end + "HHIQQQIHHHHHH")
        else:
            hdr = struct.Struct(end + "HHIIIIIHHHHHH")
        raw = f.read(hdr.size)
        if len(raw) < hdr.size:
            raise ValueError(f"{path}: truncated ELF header")
        (_, _, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
         e_shentsize, _, _) = hdr.unpack(raw)
        if e_phnum == PN_XNUM:
            # real count is in section 0's sh_info
            f.seek(e_shoff + (44 if is64 else 28))
            (e_phnum,) = struct.unpack(end + "I", f.read(4))
        if is64:
            ph = struct.Struct(end + "IIQQQQQQ")  # p_type p_flags p_offset ...
        else:
            ph = struct.Struct(end + "IIIIIIII")  # p_type p_offset ...
        if e_phnum and e_phentsize < ph.size:
            raise ValueError(f"{path}: bad e_phentsize {e_phentsize}")
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            raw = f.read(ph.size)
            if len(raw) < ph.size:
                raise ValueError(f"{path}: truncated program headers")
            fields = ph.unpack(raw)
            if fields[0] != PT_INTERP:
                continue
            if is64:
                p_offset, p_filesz = fields[2], fields[5]
            else:
                p_offset, p_filesz = fields[1], fields[4]
            f.seek(p_offset)
            data = f.read(p_filesz)
            return os.fsdecode(data.split(b"\0", 1)[0])
    return None


def decode_bytes(s: str) -> bytes:
    """Exact bytes of a string from print_argv / execveat_unlinked JSON
    (each byte was written as code point U+0000..U+00FF)."""
    return s.encode("latin-1")


def _fd3_preexec(w: int):
    def preexec():
        # Runs in the child between fork and exec: put the pipe on fd 3
        # (inheritable), and mark every other fd >= 3 close-on-exec (like
        # close_fds, which cannot be used as it would close fd 3).
        if w == 3:
            os.set_inheritable(3, True)
        else:
            os.dup2(w, 3, inheritable=True)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 3:
                try:
                    os.set_inheritable(fd, False)
                except OSError:
                    pass

    return preexec


def popen_with_fd3(argv, **kwargs) -> tuple[subprocess.Popen, int]:
    """Start argv with the write end of a new pipe as its fd 3.  Returns
    (Popen, read_fd); the caller reads and closes read_fd.  kwargs go to
    Popen (close_fds and preexec_fn are taken)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            argv, close_fds=False, preexec_fn=_fd3_preexec(w), **kwargs
        )
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return proc, r


def run_with_fd3(
    argv, timeout: float = 60, **kwargs
) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run argv to completion with a pipe on fd 3; stdout and stderr are
    captured (unless given in kwargs).  Returns (CompletedProcess, all bytes
    written to fd 3)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc, r = popen_with_fd3(argv, **kwargs)
    chunks: list[bytes] = []

    def reader():
        with os.fdopen(r, "rb", buffering=0) as f:
            while True:
                b = f.read(65536)
                if not b:
                    return
                chunks.append(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    t.join(timeout)
    return (
        subprocess.CompletedProcess(argv, proc.returncode, out, err),
        b"".join(chunks),
    )
