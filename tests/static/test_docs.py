"""Docs checked against the code they describe."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from otel_exec import errors

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"


def exit_code_table() -> dict[int, set[str]]:
    """docs/operations.md's exit-code table: code -> class names in its row."""
    text = OPERATIONS.read_text()
    section = text.split("## Exit codes and errors", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, set[str]] = {}
    for line in section.splitlines():
        m = re.match(r"\| (\d+) \|([^|]*)\|", line)
        if m:
            assert int(m.group(1)) not in rows, f"exit code {m.group(1)} has two rows"
            rows[int(m.group(1))] = set(re.findall(r"`(\w+)`", m.group(2)))
    return rows


def error_classes() -> dict[str, int]:
    return {name: cls.exit_code for name, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.OtelExecError)}


def test_exit_code_table_matches_errors_py() -> None:
    table = exit_code_table()
    classes = error_classes()
    assert classes, "no error classes found"
    for name, code in classes.items():
        assert code in table, f"{name} exits {code}: no row for {code} in {OPERATIONS.name}"
        assert name in table[code], f"{name} exits {code}, but the row for {code} names {table[code]}"
    for code, names in table.items():
        for name in names:
            assert classes.get(name) == code, f"row {code} names {name}, which exits {classes.get(name)}"
        if code not in (0, 130):  # a clean stop; SIGINT before the handlers are installed
            assert names, f"row {code} names no class of errors.py"
    assert {0, 2, 130} <= set(table)


def test_other_exit_code_lists_point_to_the_table() -> None:
    """README and the systemd unit do not keep their own descriptions of the
    codes: the unit's RestartPreventExitStatus lists every code >= 2 the
    table has (a new code gets a row and is not restarted on unless this
    test says otherwise)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert "docs/operations.md#exit-codes-and-errors" in section
    assert "| 3 |" not in section
    unit = (ROOT / "otel_exec" / "_systemd" / "otel-exec.service").read_text()
    prevent = re.search(r"^RestartPreventExitStatus=(.*)$", unit, re.M)
    assert prevent
    assert {int(c) for c in prevent.group(1).split()} == {c for c in exit_code_table() if 2 <= c < 128}
