"""Whether the optional C extensions of the per-exec hot path may be used.

Each extension has a pure-Python reference next to it that produces the same
output; OTEL_EXEC_NATIVE=0 selects the reference (the second CI pass, and a
way to bisect a difference between the two)."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NATIVE_ENV = "OTEL_EXEC_NATIVE"


def native_wanted() -> bool:
    """False when OTEL_EXEC_NATIVE=0; the extensions are then never imported."""
    return os.environ.get(NATIVE_ENV, "1") != "0"


def native_module(name: str) -> ModuleType | None:
    """The extension module `name` when it is built and native_wanted(),
    else None: its pure-Python reference runs."""
    if not native_wanted():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # not built: setup.py said so when installing
        return None
