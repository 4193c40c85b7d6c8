"""otel_exec/model/layout.py must agree with bpf/otel_exec.h, the one source of truth.

Constants and enums, from the header text itself; struct offsets are checked
with every other kernel <-> user struct in tests/model/test_layout_registry.py.
"""
from __future__ import annotations

import re
from pathlib import Path

from otel_exec.model import layout

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "otel_exec.h"


def _header_defines() -> dict[str, int]:
    defines: dict[str, int] = {}
    for name, expr in re.findall(r"^#define (OE_\w+)\s+(.+?)\s*(?:/\*.*)?$", HEADER.read_text(), re.M):
        expr = re.sub(r"(\d+)u\b", r"\1", expr)
        expr = re.sub(r"\bOE_\w+", lambda m: str(defines.get(m.group(0), m.group(0))), expr)
        try:
            defines[name] = int(eval(expr, {}))  # header arithmetic only: digits, << * ( )
        except Exception:
            continue
    return defines


def _header_enum(name: str) -> list[str]:
    body = re.search(r"enum " + name + r" \{(.*?)\};", HEADER.read_text(), re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return [e.split("=")[0].strip() for e in body.split(",") if e.strip()]


def test_constants_match_header() -> None:
    d = _header_defines()
    assert d["OE_COMM_LEN"] == layout.COMM_LEN
    assert d["OE_HOSTNAME_LEN"] == layout.HOSTNAME_LEN
    assert d["OE_ARGS_MAX"] == layout.ARGS_MAX
    assert d["OE_ARGV_RING_FULL_MAX"] == layout.ARGV_RING_FULL_MAX
    assert d["OE_CGROUP_DEPTH_MAX"] == layout.CGROUP_DEPTH_MAX
    assert d["OE_ABI_VERSION"] == layout.ABI_VERSION
    for flag in ("ARGV_TRUNCATED", "ENV_TRUNCATED", "INVOKED_FROM_KERNEL", "ARGV_UNREADABLE",
                 "ENV_UNREADABLE", "CMDPATH_TRUNCATED", "INTERP_TRUNCATED", "PREV_COMM_KNOWN", "PARENT_EXE_UNKNOWN",
                 "SAMPLED", "PATH_SHIFT", "PATH_BITS"):
        assert d[f"OE_F_{flag}"] == getattr(layout, f"F_{flag}"), flag
    for match in ("INCLUDE", "EXCLUDE", "KEEP"):
        assert d[f"OE_MATCH_{match}"] == getattr(layout, f"MATCH_{match}")
    for skip in ("STDIN", "INTERPRETER", "PATHS"):
        assert d[f"OE_SKIP_{skip}"] == getattr(layout, f"SKIP_{skip}")
    assert d["OE_FILTER_ENTRIES_MAX"] == layout.FILTER_ENTRIES_MAX
    assert d["OE_PREFIX_LEN"] == layout.PREFIX_LEN
    for flag in ("TRUNCATED", "DELETED", "DETACHED"):
        assert d[f"OE_PF_{flag}"] == getattr(layout, f"PF_{flag}")
    paths = ["PATHNAME", "INTERPRETER", "STDIN", "PWD", "CGROUP"]
    assert [d[f"OE_PATH_{p}"] for p in paths] == list(range(len(layout.PATH_FIELDS)))


def test_enums_match_header() -> None:
    body = re.search(r"enum oe_record_type \{(.*?)\};", HEADER.read_text(), re.S).group(1)
    values = {k: int(v) for k, v in re.findall(r"(OE_REC_\w+) = (\d+)", body)}
    assert values == {"OE_REC_EXEC": layout.REC_EXEC, "OE_REC_EXIT": layout.REC_EXIT,
                      "OE_REC_UNREPORTED_EXEC": layout.REC_UNREPORTED_EXEC}
    strs = _header_enum("oe_str")
    assert strs[-1] == "OE_STR_COUNT"
    assert [s.removeprefix("OE_STR_").lower() for s in strs[:-1]] == list(layout.STR_NAMES)
    counters = _header_enum("oe_counter")
    assert counters[-1] == "OE_CNT_COUNT"
    assert [c.removeprefix("OE_CNT_").lower() for c in counters[:-1]] == list(layout.COUNTER_NAMES)
