"""otel_exec/model/layout.py must agree with bpf/otel_exec.h, the one source of truth.

Struct offsets come from BTF that clang emits for the header compiled for the
BPF target (the same compiler and ABI as the kernel programs); constants and
enums from the header text itself.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from otel_exec.model import layout

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "otel_exec.h"
RECORD_STRUCTS = ("oe_exec", "oe_exit", "oe_unreported_exec", "oe_prefix_key", "oe_config")


@pytest.fixture(scope="module")
def btf_structs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    d = tmp_path_factory.mktemp("layout")
    src = d / "layout.c"
    src.write_text("typedef unsigned char __u8; typedef unsigned int __u32;\n"
                   "typedef unsigned long long __u64;\n"
                   f'#include "{HEADER}"\n'
                   + "".join(f"struct {name} {name}_instance;\n" for name in RECORD_STRUCTS))
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(d / "layout.o")],
                   check=True)
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(d / "layout.o")],
                         check=True, capture_output=True, text=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}
    return {"by_id": types, **{t["name"]: t for t in types.values() if t["kind"] == "STRUCT"}}


def _flatten(btf: dict, struct: dict, prefix: str = "", base: int = 0) -> dict[str, int]:
    """Member path -> byte offset, descending into nested structs and
    expanding u32 arrays into name[i]."""
    def resolve(type_id: int) -> dict:
        t = btf["by_id"][type_id]
        while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
            t = btf["by_id"][t["type_id"]]
        return t

    out: dict[str, int] = {}
    for m in struct["members"]:
        off = base + m["bits_offset"] // 8
        t = resolve(m["type_id"])
        name = prefix + m["name"]
        if t["kind"] == "STRUCT":
            out.update(_flatten(btf, t, name + ".", off))
        elif t["kind"] == "ARRAY" and resolve(t["type_id"]).get("size") == 4:
            for i in range(t["nr_elems"]):
                out[f"{name}[{i}]"] = off + 4 * i
        else:
            out[name] = off
    return out


@pytest.mark.parametrize("cname,members,packer", [
    ("oe_exec", layout.EXEC_MEMBERS, layout.EXEC),
    ("oe_exit", layout.EXIT_MEMBERS, layout.EXIT),
    ("oe_unreported_exec", layout.UNREPORTED_EXEC_MEMBERS, layout.UNREPORTED_EXEC),
    ("oe_prefix_key", layout.PREFIX_KEY_MEMBERS, layout.PREFIX_KEY),
    ("oe_config", layout.CONFIG_MEMBERS, layout.CONFIG),
])
def test_struct_matches_btf(btf_structs: dict, cname: str, members: list, packer) -> None:
    struct = btf_structs[cname]
    assert layout.member_offsets(members) == _flatten(btf_structs, struct)
    assert packer.size == struct["size"]


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
