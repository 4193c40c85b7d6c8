"""Waiting for a condition that another process or thread makes true."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def wait_until(find: Callable[[], _T], timeout: float, interval: float = 0.05) -> _T:
    """find()'s first true result, or its last one after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(interval)
