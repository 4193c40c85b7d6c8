"""One registry of every struct the kernel programs and user space share,
each with its user-side mirror, checked against the C headers compiled for
the BPF target (as Tetragon's pkg/alignchecker checks its Go mirrors).

A header is compiled with clang -target bpf (the compiler and ABI of both
the CO-RE object and BCC's run-time compile) and its BTF read with bpftool:
every member's offset and every struct's size must match the mirror, and
every struct a header declares must be in the registry. A mismatch names
the struct and the member. The BCC header's constants and counters are
checked the same way, through an enum the compiler evaluates.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_exec.bcc import layout as bcc_layout
from otel_exec.model import layout as core_layout
from otel_exec.model.layout import member_offsets

BPF = Path(__file__).resolve().parents[2] / "bpf"
CORE_HEADER = BPF / "otel_exec.h"
BCC_HEADER = BPF / "otel_exec_bcc.h"
# The integer types each header takes from its includer (vmlinux.h, or the
# kernel headers BCC compiles against).
TYPEDEFS = {
    CORE_HEADER: "typedef unsigned char __u8; typedef unsigned int __u32; typedef unsigned long long __u64;\n",
    BCC_HEADER: "typedef unsigned char u8; typedef unsigned int u32; typedef unsigned long long u64;\n",
}

Members = list[tuple[str, str]]


@dataclass(frozen=True)
class Mirrored:
    header: Path
    cname: str  # struct <cname> in the header
    members: Members  # its mirror: (member, struct format) in order
    role: str


# The registry: every kernel <-> user struct and its mirror.
REGISTRY = (
    Mirrored(CORE_HEADER, "oe_exec", core_layout.EXEC_MEMBERS, "CO-RE record"),
    Mirrored(CORE_HEADER, "oe_exit", core_layout.EXIT_MEMBERS, "CO-RE record"),
    Mirrored(CORE_HEADER, "oe_unreported_exec", core_layout.UNREPORTED_EXEC_MEMBERS, "CO-RE record"),
    Mirrored(CORE_HEADER, "oe_prefix_key", core_layout.PREFIX_KEY_MEMBERS, "CO-RE path_prefixes map key"),
    Mirrored(CORE_HEADER, "oe_config", core_layout.CONFIG_MEMBERS, "CO-RE load-time config (.rodata)"),
    Mirrored(BCC_HEADER, "oe_args", bcc_layout.ARGS_MEMBERS, "BCC record"),
    Mirrored(BCC_HEADER, "oe_prep", bcc_layout.PREP_MEMBERS, "BCC record"),
    Mirrored(BCC_HEADER, "oe_exec", bcc_layout.EXEC_MEMBERS, "BCC record"),
    Mirrored(BCC_HEADER, "oe_exit", bcc_layout.EXIT_MEMBERS, "BCC record"),
    Mirrored(BCC_HEADER, "oe_discard", bcc_layout.DISCARD_MEMBERS, "BCC record"),
    Mirrored(BCC_HEADER, "oe_proc", bcc_layout.PROC_MEMBERS, "BCC procs map value"),
    Mirrored(BCC_HEADER, "oe_comm", bcc_layout.COMM_MEMBERS, "BCC comm_filter map key"),
)
# Nested in the records above, checked as their members (hdr.type, file.inode).
NESTED = {(CORE_HEADER, "oe_header"), (CORE_HEADER, "oe_file_id"), (BCC_HEADER, "oe_hdr")}

# BCC header #defines -> the mirror's constants.
BCC_CONSTANTS = {
    "OE_REC_ARGS": bcc_layout.REC_ARGS, "OE_REC_PREP": bcc_layout.REC_PREP, "OE_REC_EXEC": bcc_layout.REC_EXEC,
    "OE_REC_EXIT": bcc_layout.REC_EXIT, "OE_REC_DISCARD": bcc_layout.REC_DISCARD,
    "OE_COMM_LEN": core_layout.COMM_LEN, "OE_STR_MAX": bcc_layout.STR_MAX,
    **{f"OE_{name}": getattr(bcc_layout, name) for name in (
        "A_ARGV_CUT", "A_ENV_CUT", "A_ARGV_UNREADABLE", "A_ENV_UNREADABLE", "A_ARGC_UNKNOWN", "A_ENVC_UNKNOWN",
        "E_HOST_PID_NS", "E_PARENT_KTHREAD", "E_IMAGE_KNOWN", "E_START_KNOWN", "E_FILENAME_CUT",
        "P_UNKNOWN", "P_ALIVE", "P_PARENT_OF", "P_PREEXISTING")},
    # counters: enum oe_counter in the mirror's order
    **{f"OE_CNT_{name.upper()}": i for i, name in enumerate(bcc_layout.COUNTER_NAMES)},
    "OE_CNT_COUNT": len(bcc_layout.COUNTER_NAMES),
}


def compile_btf(header: Path, cnames: list[str], typedefs: str, workdir: Path,
                constants: dict[str, int] | None = None) -> dict:
    """The BTF of header compiled for the BPF target: {"by_id": types,
    struct name: its type, "constants": the values of `constants`' names}."""
    src = workdir / f"{header.stem}_probe.c"
    text = typedefs + f'#include "{header.name}"\n'
    text += "".join(f"struct {name} {name}_instance;\n" for name in cnames)
    if constants:
        # The compiler evaluates each #define into an enum BTF records.
        text += "enum oe_probe_constants {\n" + "".join(f"\tprobe_{n} = {n},\n" for n in constants) + "};\n"
        text += "enum oe_probe_constants oe_probe_constants_instance;\n"
    src.write_text(text)
    obj = workdir / f"{header.stem}_probe.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-I{header.parent}", "-c", str(src), "-o", str(obj)],
                   check=True)
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(obj)], check=True, capture_output=True,
                         text=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}
    btf: dict = {"by_id": types, **{t["name"]: t for t in types.values() if t["kind"] == "STRUCT"}}
    btf["constants"] = {v["name"].removeprefix("probe_"): v["val"] for t in types.values()
                        if t["kind"] == "ENUM" and t["name"] == "oe_probe_constants" for v in t["values"]}
    return btf


def registered(header: Path) -> list[str]:
    return [m.cname for m in REGISTRY if m.header == header] + [c for h, c in NESTED if h == header]


def declared_structs(header: Path) -> set[str]:
    """Struct names the header defines (with a body)."""
    code = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    return set(re.findall(r"^struct (\w+) \{", code, re.M))


def flatten(btf: dict, struct_type: dict, prefix: str = "", base: int = 0) -> dict[str, int]:
    """Member path -> byte offset, descending into nested structs and
    expanding u32 arrays into name[i]."""
    def resolve(type_id: int) -> dict:
        t = btf["by_id"][type_id]
        while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
            t = btf["by_id"][t["type_id"]]
        return t

    out: dict[str, int] = {}
    for m in struct_type["members"]:
        off = base + m["bits_offset"] // 8
        t = resolve(m["type_id"])
        name = prefix + m["name"]
        if t["kind"] == "STRUCT":
            out.update(flatten(btf, t, name + ".", off))
        elif t["kind"] == "ARRAY" and resolve(t["type_id"]).get("size") == 4:
            for i in range(t["nr_elems"]):
                out[f"{name}[{i}]"] = off + 4 * i
        else:
            out[name] = off
    return out


def mismatches(btf: dict, entry: Mirrored) -> list[str]:
    """What differs between the C struct and its mirror, one line per member."""
    where = f"struct {entry.cname} ({entry.header.name}, {entry.role})"
    if entry.cname not in btf:
        return [f"{where}: not in the header"]
    in_c = flatten(btf, btf[entry.cname])
    mirror = member_offsets(entry.members)
    problems = [f"{where}: member {name} at offset {off} in C is missing from the mirror"
                for name, off in in_c.items() if name not in mirror]
    problems += [f"{where}: member {name} of the mirror is not in C" for name in mirror if name not in in_c]
    problems += [f"{where}: member {name} is at offset {in_c[name]} in C, {off} in the mirror"
                 for name, off in mirror.items() if name in in_c and in_c[name] != off]
    size = struct.calcsize("<" + "".join(fmt for _, fmt in entry.members))
    if size != btf[entry.cname]["size"]:
        problems.append(f"{where}: {btf[entry.cname]['size']} bytes in C, {size} in the mirror")
    return problems


@pytest.fixture(scope="module")
def btf_by_header(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict]:
    d = tmp_path_factory.mktemp("layout")
    return {CORE_HEADER: compile_btf(CORE_HEADER, registered(CORE_HEADER), TYPEDEFS[CORE_HEADER], d),
            BCC_HEADER: compile_btf(BCC_HEADER, registered(BCC_HEADER), TYPEDEFS[BCC_HEADER], d, BCC_CONSTANTS)}


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda e: f"{e.header.stem}:{e.cname}")
def test_struct_matches_its_mirror(btf_by_header: dict[Path, dict], entry: Mirrored) -> None:
    assert mismatches(btf_by_header[entry.header], entry) == []


@pytest.mark.parametrize("header", [CORE_HEADER, BCC_HEADER], ids=lambda h: h.name)
def test_every_shared_struct_is_registered(header: Path) -> None:
    assert declared_structs(header) - set(registered(header)) == set(), f"{header.name}: structs without a mirror"


def test_bcc_constants_and_counters_match_header(btf_by_header: dict[Path, dict]) -> None:
    assert btf_by_header[BCC_HEADER]["constants"] == BCC_CONSTANTS


def test_a_member_added_on_one_side_is_named(tmp_path: Path) -> None:
    """The check itself: a member added to the C struct but not to its
    mirror, or to the mirror but not to C, fails naming struct and member."""
    header = tmp_path / BCC_HEADER.name
    header.write_text(BCC_HEADER.read_text().replace("\tu32 filename_len;\n",
                                                     "\tu32 filename_len;\n\tu64 added_in_c;\n"))
    btf = compile_btf(header, ["oe_exec"], TYPEDEFS[BCC_HEADER], tmp_path)
    problems = mismatches(btf, Mirrored(header, "oe_exec", bcc_layout.EXEC_MEMBERS, "BCC record"))
    assert any(p.startswith("struct oe_exec (") and "member added_in_c " in p for p in problems), problems
    entry = Mirrored(BCC_HEADER, "oe_proc", [*bcc_layout.PROC_MEMBERS, ("added_in_python", "Q")], "BCC map value")
    real = compile_btf(BCC_HEADER, ["oe_proc"], TYPEDEFS[BCC_HEADER], tmp_path)
    problems = mismatches(real, entry)
    assert any(p.startswith("struct oe_proc (") and "member added_in_python " in p for p in problems), problems


def test_bcc_header_names_no_kernel_struct() -> None:
    """Like the program (test_bcc.test_program_reads_no_kernel_struct), the
    header it includes names only its own structs."""
    code = re.sub(r"/\*.*?\*/", "", BCC_HEADER.read_text(), flags=re.S)
    assert set(re.findall(r"struct\s+(\w+)", code)) == declared_structs(BCC_HEADER)
