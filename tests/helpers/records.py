"""Raw kernel records built from otel_exec/model/layout.py (the mirror of
bpf/otel_exec.h), for the decoder's tests without a kernel."""
from __future__ import annotations

from otel_exec.host.identity import HostIdentity
from otel_exec.model import layout


IDENTITY = HostIdentity(machine_id="fuzz-machine", boot_id="fuzz-boot", clk_tck=100,
                        realtime_minus_boottime_ns=1_700_000_000 * 10**9)


EXEC_NAMES = [name for name, _ in layout.EXEC_MEMBERS]


def leaf_first(components: list[bytes]) -> bytes:
    """/a/b/c as the kernel writes it: c\\0b\\0a\\0."""
    return b"".join(c + b"\0" for c in reversed(components))


def build_exec(strs: list[bytes], **values: object) -> bytes:
    """A raw exec record: struct oe_exec (layout.EXEC) with str_len[] and
    hdr.size filled in from the nine strings that follow it."""
    assert len(strs) == len(layout.STR_NAMES)
    v: dict[str, object] = {name: (b"" if fmt.endswith("s") else 0) for name, fmt in layout.EXEC_MEMBERS}
    v.update(values)
    v["hdr.type"] = values.get("hdr.type", layout.REC_EXEC)
    for i, s in enumerate(strs):
        v[f"str_len[{i}]"] = len(s)
    v["hdr.size"] = values.get("hdr.size", layout.EXEC.size + sum(map(len, strs)))
    return layout.EXEC.pack(*(v[name] for name in EXEC_NAMES)) + b"".join(strs)


def block(items: list[bytes]) -> bytes:
    """An argv or env block as the kernel copies it: NUL-terminated items."""
    return b"".join(i + b"\0" for i in items)
