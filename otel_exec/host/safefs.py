"""Files the agent creates or writes, handled so that no other user can
redirect them.

The agent runs as root and writes into places an operator names (spool
directory, --output, --ready-file), some of them in directories other users
can write to (/tmp). A path is resolved once, component by component with
O_NOFOLLOW, into a directory descriptor; every later operation is relative
to that descriptor, so swapping a component afterwards changes nothing.

While resolving, a directory is trusted only if it belongs to root or to
one of the uids the caller trusts (the agent, its --user) and nobody else
can write to it, except where the sticky bit keeps others from renaming or
deleting what is not theirs (/tmp). A symlink is followed only if root or a
trusted uid owns it, as fs.protected_symlinks does for sticky directories:
/var/run -> /run (or -> ../run) passes, a link another user planted does not.

A file is opened only if it is a regular file with a single link that a
trusted uid owns; one that does not exist is created with O_EXCL, so a name
that appears in between is refused rather than followed.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Iterable

from otel_exec.errors import UsageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40  # the kernel's own limit on links in one lookup


class UnsafePath(UsageError):
    """A path another user could redirect, or that is not what it should be."""


def _trusted(uids: Iterable[int]) -> frozenset[int]:
    return frozenset((0, os.geteuid(), *uids))


def check_dir(fd: int, where: str, trusted: frozenset[int], *, private: bool = False) -> os.stat_result:
    """`fd` is a directory a trusted uid owns that no one else can tamper
    with; with private=True, no one else can even read it."""
    st = os.fstat(fd)
    if st.st_uid not in trusted:
        raise UnsafePath(f"{where}: owned by uid {st.st_uid}, which the agent does not trust")
    if private and st.st_mode & 0o077:
        raise UnsafePath(f"{where}: mode {stat.S_IMODE(st.st_mode):04o} lets other users in (want 0700)")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafePath(f"{where}: writable by other users (mode {stat.S_IMODE(st.st_mode):04o})")
    return st


def open_dir(path: str, *, trust: Iterable[int] = (), create_mode: int | None = None) -> int:
    """A descriptor for directory `path`, every component checked. With
    create_mode, missing components are created with that mode (and belong
    to the caller)."""
    trusted = _trusted(trust)
    if not path:
        raise UnsafePath("empty path")
    pending = [p for p in os.path.abspath(path).split("/") if p]
    # The directories walked, each opened by name in the one before: the
    # one before is therefore its real parent, which is where a '..' that a
    # symlink target brings (/var/run -> ../run) leads.
    stack = [os.open("/", _DIR_FLAGS)]
    walked: list[str] = []
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    walked.pop()
                continue
            fd = stack[-1]
            here = "/" + "/".join([*walked, name])
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(name, create_mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made in between: checked like any other below
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(f"{here}: not a directory") from None
                if st.st_uid not in trusted:
                    raise UnsafePath(f"{here}: a symlink owned by uid {st.st_uid}; not followed") from None
                links += 1
                if links > _MAX_SYMLINKS:
                    raise UnsafePath(f"{path}: too many symlinks") from None
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                    walked.clear()
                pending[:0] = [p for p in target.split("/") if p and p != "."]
                continue
            stack.append(nfd)
            walked.append(name)
            check_dir(nfd, here, trusted)
        return stack.pop()
    except FileNotFoundError:
        raise UnsafePath(f"{path}: no such directory") from None
    finally:
        for fd in stack:
            os.close(fd)


def split(path: str, *, trust: Iterable[int] = ()) -> tuple[int, str]:
    """The checked parent directory of `path` and the last component."""
    parent, name = os.path.split(os.path.abspath(path))
    if not name:
        raise UnsafePath(f"{path}: names a directory, not a file")
    return open_dir(parent, trust=trust), name


def open_file(dir_fd: int, name: str, flags: int, mode: int = 0o600, *, trust: Iterable[int] = ()) -> int:
    """Open `name` in `dir_fd` for writing (flags: O_WRONLY or O_RDWR plus
    O_APPEND/O_TRUNC as wanted). A new file is created `mode`; an existing
    one must be a regular, singly linked file a trusted uid owns, and is set
    to `mode`."""
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, base | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(name, (base & ~os.O_TRUNC) | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"{name}: a symlink; not followed") from None
        raise
    try:
        st = check_file(fd, name, _trusted(trust))
        os.set_blocking(fd, True)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_file(fd: int, name: str, trusted: frozenset[int]) -> os.stat_result:
    """`fd` is a regular, singly linked file a trusted uid owns: not a
    device or FIFO, and not a hard link to a file elsewhere."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{name}: not a regular file")
    if st.st_nlink != 1:
        raise UnsafePath(f"{name}: has {st.st_nlink} links (a hard link is not written through)")
    if st.st_uid not in trusted:
        raise UnsafePath(f"{name}: owned by uid {st.st_uid}, which the agent does not trust")
    return st


def replace_file(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `name` atomically: a new file made with O_EXCL, then
    renamed over `name` (a rename replaces a symlink, never follows it).
    The temporary name is not predictable, so that another user cannot
    plant it first in a shared directory."""
    # os.urandom, as secrets.token_hex does, without the import of secrets
    # (hmac, hashlib, random) at start-up.
    tmp = f".{name}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def write_new_or_replace(path: str, data: bytes, mode: int = 0o600, *, trust: Iterable[int] = ()) -> None:
    """replace_file() for a path given by the operator."""
    dir_fd, name = split(path, trust=trust)
    try:
        replace_file(dir_fd, name, data, mode)
    finally:
        os.close(dir_fd)


def read_file(path: str, max_bytes: int, *, trust: Iterable[int] = ()) -> bytes:
    """The content of an input file the operator names (the configuration
    file): every directory on the way checked as open_dir() does, a symlink
    followed only if a trusted uid owns it, the file a regular, singly
    linked file a trusted uid owns that no other user can write to, read
    whole up to max_bytes."""
    trusted = _trusted(trust)
    fd = _open_for_reading(path, trust)
    try:
        st = check_file(fd, path, trusted)
        if st.st_mode & 0o022:
            raise UnsafePath(f"{path}: writable by other users (mode {stat.S_IMODE(st.st_mode):04o})")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnsafePath(f"{path}: larger than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _open_for_reading(path: str, trust: Iterable[int]) -> int:
    """A read descriptor for `path`; a last component that is a symlink a
    trusted uid made (a Kubernetes ConfigMap's config.yaml ->
    ..data/config.yaml) is followed, its target checked like any path."""
    for _ in range(_MAX_SYMLINKS):
        dir_fd, name = split(path, trust=trust)
        try:
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise UnsafePath(f"{path}: no such file") from None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise UnsafePath(f"{path}: {e.strerror}") from None
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if st.st_uid not in _trusted(trust):
                raise UnsafePath(f"{path}: a symlink owned by uid {st.st_uid}; not followed") from None
            path = os.path.join(os.path.dirname(os.path.abspath(path)), os.readlink(name, dir_fd=dir_fd))
        finally:
            os.close(dir_fd)
    raise UnsafePath(f"{path}: too many symlinks")
