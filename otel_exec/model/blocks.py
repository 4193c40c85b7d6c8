"""Kernel strings and argv/env blocks as Python text, shared by both
backends' decoders and the /proc reader's events: invalid UTF-8 keeps its
bytes as \\xNN escapes, and identical blocks that repeat decode to one
shared list."""
from __future__ import annotations

from collections.abc import Callable

from otel_exec.model.events import Strings


def text(raw: bytes) -> str:
    """Kernel bytes as str; invalid UTF-8 bytes become \\xNN escapes."""
    return raw.decode("utf-8", "backslashreplace")


def split_block(block: bytes, truncated: bool) -> list[str]:
    """argv/env block -> elements. A block cut by the bound loses its partial
    last element rather than reporting it as if whole."""
    if not block:
        return []
    if block.endswith(b"\0"):
        return [text(e) for e in block[:-1].split(b"\0")]
    parts = block.split(b"\0")
    if truncated:
        parts.pop()
    return [text(e) for e in parts]


class BoundedCache(dict):  # type: ignore[type-arg]
    """A memo that empties itself once it holds max_entries entries or
    max_bytes of what remember() was told they weigh: emptying costs one
    re-decode per value still in use, and bounds memory whatever the input
    (argv and env blocks reach 128 KiB each).

    A value is kept from the second time its key is remembered on: the
    memos pay off for what repeats (one command run over and over), and a
    host's one-off execs (a test suite's, each with its own argv or
    environment) would otherwise fill them to their bounds, over and over,
    with values never asked for again: the agent's resident memory grew by
    the memos' size and the heap holes their emptying left. Keys seen once
    are remembered by their hash only, at most max_entries of them."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 2 << 20) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.seen_once: set[int] = set()  # hash() of keys remembered once and not kept

    def remember(self, key: object, value: object, weight: int = 0) -> bool:
        """Keep value under key if the key came once before; whether it was kept.
        (Keys hashed by identity are recycled with their objects' memory:
        such a memo keeps what a repeat decided elsewhere, with keep().)"""
        seen_once = self.seen_once
        key_hash = hash(key)
        if key_hash not in seen_once:
            if len(seen_once) >= self.max_entries:
                seen_once.clear()
            seen_once.add(key_hash)
            return False
        seen_once.discard(key_hash)
        self.keep(key, value, weight)
        return True

    def keep(self, key: object, value: object, weight: int = 0) -> None:
        if len(self) >= self.max_entries or self.bytes + weight > self.max_bytes:
            self.clear()
            self.bytes = 0
        self[key] = value
        self.bytes += weight


class BlockCache:
    """Raw argv/env block -> its element list, one shared instance per
    distinct block from its second sighting on (which the policy then
    redacts in place, once).
    `split`: split_block, or a function giving the same lists (the CO-RE
    decoder's C one)."""

    def __init__(self, split: Callable[[bytes, bool], list[str]] = split_block) -> None:
        self._cache = BoundedCache()
        self._split = split

    def get(self, raw: bytes, truncated: bool) -> Strings:
        key = (raw, truncated)
        hit: Strings | None = self._cache.get(key)
        if hit is None:
            hit = Strings(self._split(raw, truncated))
            self._cache.remember(key, hit, 2 * len(raw))  # the raw key and the decoded strings
        return hit
