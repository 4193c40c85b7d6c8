"""Whether the optional C extensions of the per-exec hot path may be used.

Each extension has a pure-Python reference next to it that produces the same
output; OTEL_EXEC_NATIVE=0 selects the reference (the second CI pass, and a
way to bisect a difference between the two)."""
from __future__ import annotations

import os

NATIVE_ENV = "OTEL_EXEC_NATIVE"


def native_wanted() -> bool:
    """False when OTEL_EXEC_NATIVE=0; the extensions are then never imported."""
    return os.environ.get(NATIVE_ENV, "1") != "0"
