"""Record -> event by name: the decoder's values cannot shift into another
field when ExecEvent's fields move, and a renamed field is an error, not a
silent misplacement (otel_exec.model.events.per_exec_constructor,
SharedExec.of). tests/test_decode_fuzz.py checks the decoded values of
every field against an oracle by name."""
from __future__ import annotations

import random
from dataclasses import field, fields, make_dataclass

import pytest

from otel_exec.model.events import SHARED_FIELDS, ExecEvent, SharedExec, exec_event_from_shared, per_exec_constructor


def named_values(names: tuple[str, ...] | list[str]) -> dict[str, object]:
    return {name: f"value of {name}" for name in names}


def named(names: tuple[str, ...]) -> tuple[object, ...]:
    """("uid", "value of uid", "gid", ...), as the decoder gives SharedExec.of."""
    return tuple(x for name, value in named_values(names).items() for x in (name, value))


def per_exec_names(event: type) -> list[str]:
    return [f.name for f in fields(event) if f.name not in SHARED_FIELDS and f.name != "shared"]


def test_every_value_lands_on_the_field_it_is_named_for() -> None:
    shared = SharedExec.of(None, False, named(SHARED_FIELDS))
    ev = exec_event_from_shared(shared, **named_values(per_exec_names(ExecEvent)))
    for f in fields(ExecEvent):
        assert getattr(ev, f.name) == (shared if f.name == "shared" else f"value of {f.name}"), f.name


@pytest.mark.parametrize("seed", range(5))
def test_reordered_fields_do_not_shift_values(seed: int) -> None:
    """The same fields in another order (the shared ones no longer in one
    run)."""
    names = [f.name for f in fields(ExecEvent)]
    random.Random(seed).shuffle(names)
    reordered = make_dataclass("Reordered", [(n, object, field(default=None)) for n in names], slots=True)
    build = per_exec_constructor(reordered, SHARED_FIELDS)
    shared = SharedExec.of(None, False, named(SHARED_FIELDS))
    ev = build(shared, **named_values(per_exec_names(reordered)))
    for name in names:
        assert getattr(ev, name) == (shared if name == "shared" else f"value of {name}"), name


def test_a_renamed_shared_field_is_an_error_at_import() -> None:
    names = ["user_id" if f.name == "uid" else f.name for f in fields(ExecEvent)]
    renamed = make_dataclass("Renamed", [(n, object, field(default=None)) for n in names])
    with pytest.raises(TypeError, match="has no field uid"):
        per_exec_constructor(renamed, SHARED_FIELDS)


def test_a_renamed_per_exec_field_is_an_error_at_the_first_call() -> None:
    names = ["host_pid_" if f.name == "host_pid" else f.name for f in fields(ExecEvent)]
    renamed = make_dataclass("Renamed", [(n, object, field(default=None)) for n in names])
    build = per_exec_constructor(renamed, SHARED_FIELDS)
    shared = SharedExec.of(None, False, named(SHARED_FIELDS))
    with pytest.raises(TypeError, match="host_pid"):
        build(shared, **named_values(per_exec_names(ExecEvent)))


def test_the_shared_part_must_name_exactly_the_shared_fields_in_their_order() -> None:
    renamed = tuple("user_id" if n == "uid" else n for n in SHARED_FIELDS)
    swapped = (SHARED_FIELDS[1], SHARED_FIELDS[0], *SHARED_FIELDS[2:])
    for names in (renamed, swapped, SHARED_FIELDS[1:], (*SHARED_FIELDS, "not_a_field")):
        with pytest.raises(ValueError, match="ExecEvent's shared fields are, in order"):
            SharedExec.of(None, False, named(names))
