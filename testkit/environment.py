"""An exec record's environment read back from its attributes, in either of
the forms otel-exec sends it (docs/attributes.md#the-environment): packed as
KEY=VALUE entries of otel_exec.env.rest (the default), or the first
--env-attributes N variables as process.environment_variable.KEY attributes
of their own and the rest packed.

Attributes are a dict by key with values as a receiver decoded them: a
string, and for the packed array a list of strings (tests/helpers/collector.py)
or an opentelemetry-proto ArrayValue (testkit/fake_collector.attributes)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PER_VARIABLE = "process.environment_variable."  # + KEY
PACKED = "otel_exec.env.rest"


def packed_entries(value: Any) -> list[str]:
    """The KEY=VALUE entries of an otel_exec.env.rest value."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.string_value for v in value.values]  # an ArrayValue


def environment(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Every variable of a record, from both forms (a key is sent once)."""
    env = {k[len(PER_VARIABLE):]: v for k, v in attributes.items() if k.startswith(PER_VARIABLE)}
    for entry in packed_entries(attributes.get(PACKED)):
        key, _, value = entry.partition("=")
        env.setdefault(key, value)
    return env


def variable(attributes: Mapping[str, Any], name: str) -> str | None:
    """One variable's value in a record, from either form; None when it has none."""
    value = attributes.get(PER_VARIABLE + name)
    if value is not None:
        return value
    prefix = name + "="
    for entry in packed_entries(attributes.get(PACKED)):
        if entry.startswith(prefix):
            return entry[len(prefix):]
    return None
