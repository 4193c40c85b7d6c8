"""No shell is ever invoked with data from an event: the agent starts no
process at all (issue 5). Checked on the source, since a run cannot prove
an absence."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "otel_exec"
FORBIDDEN = re.compile(r"\b(subprocess|os\.system|os\.popen|os\.exec\w*|os\.spawn\w*|pty\.spawn|shell=True)\b")


def test_agent_never_starts_a_process() -> None:
    hits = [f"{path.name}:{n}: {line.strip()}"
            for path in PACKAGE.glob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if FORBIDDEN.search(line) and not line.lstrip().startswith("#")]
    assert hits == []
