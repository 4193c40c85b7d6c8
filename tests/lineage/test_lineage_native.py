"""The C extension otel_exec.lineage._lineage_native against its Python
reference (spans._digest, proctable's _image_parent, _on_exec, _on_exit, and
ProcessSpan itself for new_span): the same id bytes for any exec id, salt
and id size, or the same exception; the same span for any arguments; and
the same spans (ids, parents, flags, how they ended), process table,
evictions and on_drop calls from the span lineage over random exec, exit
and unreported-exec sequences (reused pids, stale entries, a small table)
with either. The module is imported here
whatever OTEL_EXEC_NATIVE says (it only decides what the lineage uses), so
this runs in both CI passes; it must be built (`.venv/bin/python setup.py
build_ext --inplace`).
"""
from __future__ import annotations

import functools
import importlib
from collections import OrderedDict
from typing import Callable

from hypothesis import example, given
from hypothesis import strategies as st

from otel_exec.lineage import proctable
from otel_exec.lineage import spans as spans_mod
from otel_exec.lineage.proctable import ProcessTable
from otel_exec.lineage.spans import ProcessSpan, SpanLineage
from otel_exec.model.events import ExitEvent, UnreportedExecEvent
from otel_exec.native import native_wanted
from tests.helpers.events import exec_ev
from tests.helpers.record_fuzz import fuzz_settings


# Not built: an ImportError here, never a skip (.venv/bin/python setup.py build_ext --inplace).
NATIVE = importlib.import_module("otel_exec.lineage._lineage_native")
# What spans does at import when native_wanted(); done here for the other CI pass.
NATIVE.span_class(ProcessSpan)




class ReferenceTable(ProcessTable):
    image_parent = proctable._image_parent
    on_exec = proctable._on_exec
    on_exit = proctable._on_exit


class NativeTable(ProcessTable):
    image_parent = NATIVE.image_parent
    on_exec = NATIVE.on_exec
    on_exit = NATIVE.on_exit


SIDES: dict[str, tuple[type[ProcessTable], Callable[[str, int, int], bytes], Callable[..., ProcessSpan]]] = {
    "reference": (ReferenceTable, spans_mod._digest, ProcessSpan),
    "native": (NativeTable, NATIVE.digest, NATIVE.new_span)}


class ReferenceLineage(SpanLineage):
    on_exit = spans_mod._on_exit


class NativeLineage(SpanLineage):
    on_exit = NATIVE.lineage_on_exit


LINEAGES: dict[str, type[SpanLineage]] = {"reference": ReferenceLineage, "native": NativeLineage}


def test_the_switch_decides_what_the_lineage_uses() -> None:
    side = SIDES["native" if native_wanted() else "reference"]
    assert spans_mod.digest is side[1]
    assert spans_mod.new_span is side[2]
    for name in ("image_parent", "on_exec", "on_exit"):
        assert getattr(ProcessTable, name) is getattr(side[0], name)
    assert SpanLineage.on_exit is LINEAGES["native" if native_wanted() else "reference"].on_exit


def outcome(digest: Callable[[str, int, int], bytes], exec_id: str, salt: int, size: int) -> object:
    try:
        return digest(exec_id, salt, size)
    except Exception as e:  # the same exception type from both is part of the contract
        return type(e)


HEX = "0123456789abcdefABCDEF"
exec_ids = st.one_of(
    st.text(HEX, max_size=40),  # exec ids, upper case, short and long ones
    st.text(HEX + " \t\n\x0b-@xyz0", max_size=40),  # whitespace bytes.fromhex skips, separators, pid@time keys
    st.text(max_size=40),  # anything, non-ASCII digits included
)


@fuzz_settings(400)
@given(exec_ids, st.one_of(st.just(0), st.integers(-2**70, 2**70)), st.integers(1, 16))
@example("0af7651916cd43dd8448eb211c80319c", 0, 8)
@example("0af7651916cd43dd8448eb211c80319c", 0, 16)
@example("0af7651916cd43dd8448eb211c80319c", 1_700_000_000_000_000_000, 8)
@example("0" * 32, 0, 16)  # all zero: 0x01 bytes
@example("0123456789abcdefABCDEF0123456789", 0, 16)  # every hex digit, read directly from an ASCII id
@example("0123456789abcdef" + "\N{LATIN SMALL LETTER E WITH ACUTE}" * 16, 0, 8)  # read as UCS-1, not ASCII
@example("0123456789abcdeg", 0, 8)  # its last digit not hex: hashed
@example("0" * 15 + "1", 0, 8)
@example("0af7 651916cd43dd8448eb211c80319c", 0, 8)  # a space bytes.fromhex would skip: hashed
@example("0af76519", 0, 8)  # too short for the id: hashed
@example("١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦", 0, 8)  # Arabic-Indic digits are not hex
@example("12@1000", 0, 16)  # no exec id: a pid@time key
@example("\ud800abc", 0, 8)  # not encodable: both raise
@example("\ud800abc", 7, 8)
@example("", 0, 1)
@example("", -1, 16)
def test_both_give_the_same_id(exec_id: str, salt: int, size: int) -> None:
    got = {name: outcome(digest, exec_id, salt, size) for name, (_, digest, _) in SIDES.items()}
    assert got["native"] == got["reference"]
    if isinstance(got["native"], bytes):
        assert len(got["native"]) == size and got["native"] != bytes(size)


def test_arguments_of_the_wrong_type_raise() -> None:
    for args in ((b"00", 0, 8), ("00", "0", 8), ("00", 0, 0), ("00", 0, 17), ("00", 0)):
        try:
            NATIVE.digest(*args)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"digest{args!r} did not raise")


# -- the whole lineage with either digest -------------------------------------

PIDS = st.integers(2, 9)
ids = st.one_of(st.text("0123456789abcdef", min_size=32, max_size=32), st.sampled_from(["", "x", "12@3"]))
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0{}"
steps = st.lists(st.one_of(
    st.tuples(st.just("exec"), PIDS, PIDS, st.integers(1, 4), ids, st.sampled_from(["", "1", "0", "bad"]),
              st.one_of(st.none(), st.integers(1, 4)), st.booleans()),
    st.tuples(st.just("exit"), PIDS, st.integers(1, 4)),
    st.tuples(st.just("unreported"), PIDS, st.integers(1, 4)),
), max_size=60)


def spans_of(side: str, plan: list[tuple], size: int) -> tuple[list, list, int]:
    """The spans a lineage opened and ended, its table's entries and
    evictions, for the steps of plan with one side's table methods and id
    derivation."""
    table_type, digest, new_span = SIDES[side]
    chosen = spans_mod.digest, spans_mod.new_span
    spans_mod.digest, spans_mod.new_span = digest, new_span
    try:
        table = table_type(max_entries=size)
        lineage = LINEAGES[side](table)
        ended: list[ProcessSpan] = []
        lineage.on_end = [ended.append]
        opened: list[ProcessSpan | None] = []
        for ts, step in enumerate(plan, start=1000):
            if step[0] == "exec":
                _, pid, ppid, ticks, exec_id, flags, parent_ticks, parent_known = step
                parent = table._procs.get(ppid)  # not get(): a use would change the eviction order
                ev = exec_ev(pid, ppid, ticks, exec_id, ts=ts,
                             parent_exec_id=parent.exec_id if parent and parent_known else "")
                ev.parent_start_ticks = parent_ticks
                ev.env = [f"TRACEPARENT={TP.format(flags)}"] if flags in ("0", "1") else \
                    ["TRACEPARENT=bad"] if flags else []
                opened.append(lineage.on_exec(ev))
            elif step[0] == "exit":
                lineage.on_exit(ExitEvent(timestamp=ts, pid=step[1], start_ticks=step[2], exit_code=0, signal=None,
                                          core_dumped=False, comm="x"))
            else:
                lineage.on_unreported_exec(UnreportedExecEvent(timestamp=ts, pid=step[1], start_ticks=step[2]))
        lineage.close()
    finally:
        spans_mod.digest, spans_mod.new_span = chosen

    def fields(span: ProcessSpan | None) -> tuple | None:
        if span is None:
            return None
        p = span.process
        return (p.pid, p.ppid, p.start_ticks, p.exec_id, p.parent_exec_id, p.comm, p.exe, p.argv,
                p.seeded_from_proc, p.exec_time, p.exit_code, p.signal, span.trace_id, span.span_id, span.parent_span_id,
                span.trace_flags, span.trace_state, span.traceparent, span.untrusted_traceparent, span.start_ns,
                span.ended_by, span.incomplete, span.attributes, span.late_identity,
                span.end_ns if span.ended_by != "evicted" and span.ended_by != "agent_stopped" else None)

    return [fields(s) for s in opened] + [fields(s) for s in ended], \
        [(i.pid, i.ppid, i.start_ticks, i.exec_id, i.parent_exec_id, i.exit_code) for i in table.entries()], \
        table.evicted


@fuzz_settings(300)
@given(steps, st.integers(1, 8))
def test_the_lineage_gives_the_same_spans_and_table(plan: list[tuple], size: int) -> None:
    assert spans_of("native", plan, size) == spans_of("reference", plan, size)


def test_an_on_drop_that_raises_leaves_the_same_table() -> None:
    def refuse(info: object) -> None:
        raise RuntimeError("refused")

    states = []
    for table_type, _, _ in SIDES.values():
        table = table_type(max_entries=2)
        table.on_drop = refuse
        raised = []
        for ev in (exec_ev(2, 1, 1, "a"), exec_ev(3, 1, 1, "b"), exec_ev(4, 1, 1, "c"),  # evicts 2
                   exec_ev(3, 1, 9, "d"),  # 3's stale entry
                   ExitEvent(timestamp=1, pid=4, start_ticks=5, exit_code=0, signal=None, core_dumped=False, comm="x")):
            try:
                table.on_exit(ev) if isinstance(ev, ExitEvent) else table.on_exec(ev)
            except RuntimeError as e:
                raised.append(str(e))
        states.append((raised, [(i.pid, i.exec_id) for i in table.entries()], table.evicted))
    assert states[0] == states[1]
    assert states[0][0] == ["refused"] * 3 and states[0][2] == 1


def test_an_event_without_the_fields_raises_the_same() -> None:
    for name in ("image_parent", "on_exec", "on_exit"):
        got = []
        for table_type, _, _ in SIDES.values():
            table = table_type()
            table.on_exec(exec_ev(2, 1, 1, "a"))
            try:
                getattr(table, name)(object())
            except Exception as e:
                got.append(type(e))
        assert got == [AttributeError, AttributeError], name


# -- new_span against ProcessSpan(...) ----------------------------------------

SPAN_SLOTS = ProcessSpan.__slots__
span_values = st.one_of(st.none(), st.integers(-2**70, 2**70), st.binary(max_size=16), st.text(max_size=8),
                        st.booleans(), st.tuples(st.binary(max_size=4)))


def built(make: Callable[..., ProcessSpan], args: list[object]) -> object:
    try:
        span = make(*args)
    except TypeError:  # too few or too many arguments: both refuse
        return TypeError
    assert type(span) is ProcessSpan
    return [getattr(span, name) for name in SPAN_SLOTS]


@fuzz_settings(300)
@given(st.lists(span_values, max_size=len(SPAN_SLOTS) + 1))
def test_new_span_fills_every_slot_as_the_class_does(args: list[object]) -> None:
    got = built(NATIVE.new_span, args)
    assert got == built(ProcessSpan, args)
    # Every value is the one given (or the same default), not an equal copy.
    if got is not TypeError:
        native, reference = NATIVE.new_span(*args), ProcessSpan(*args)
        assert all(getattr(native, n) is getattr(reference, n) for n in SPAN_SLOTS)


def test_span_class_refuses_a_class_its_init_does_not_describe() -> None:
    class NoSlots:
        def __init__(self, a: int) -> None:
            self.a = a

    class Keywords:
        __slots__ = ("a",)

        def __init__(self, *, a: int) -> None:
            self.a = a

    for cls in (NoSlots, Keywords, int, len):
        try:
            NATIVE.span_class(cls)
        except TypeError:
            continue
        raise AssertionError(f"span_class({cls!r}) did not raise")
    assert type(NATIVE.new_span(None, b"", b"", b"", "", "", "", 0)) is ProcessSpan  # still ProcessSpan


def test_span_class_reads_a_decorated_init_as_inspect_does() -> None:
    """A functools.wraps decorator around __init__ (mutmut's trampolines,
    when the mutation score runs these tests) takes any arguments: span_class
    reads the parameters of the __init__ it wraps, which new_span fills."""
    def decorated(init: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(init)
        def wrapper(*args: object, **kwargs: object) -> None:
            init(*args, **kwargs)
        return wrapper

    class Decorated:
        __slots__ = ("a", "b")

        @decorated
        def __init__(self, a: int, b: str = "b") -> None:
            self.a = a
            self.b = b

    try:
        NATIVE.span_class(Decorated)
        made = NATIVE.new_span(1)
        assert type(made) is Decorated and (made.a, made.b) == (1, "b")
    finally:
        NATIVE.span_class(ProcessSpan)


def test_a_table_class_that_keeps_its_attributes_elsewhere() -> None:
    """The C methods read ProcessTable's slots by offset, found per class:
    a subclass whose entries and bound are properties is read by name, as
    the reference reads it, and ProcessTable's own slots again after it."""

    def elsewhere(base: type[ProcessTable]) -> type[ProcessTable]:
        class Elsewhere(base):  # type: ignore[valid-type, misc]
            def __init__(self) -> None:
                super().__init__()
                # Decoys in ProcessTable's own slots, which these properties hide.
                ProcessTable._procs.__set__(self, OrderedDict())  # type: ignore[attr-defined]
                ProcessTable.max_entries.__set__(self, 100)  # type: ignore[attr-defined]

            @property  # type: ignore[misc]
            def _procs(self) -> OrderedDict:
                return self.__dict__["kept"]

            @_procs.setter
            def _procs(self, value: OrderedDict) -> None:
                self.__dict__["kept"] = value

            @property  # type: ignore[misc]
            def max_entries(self) -> int:
                return 2

            @max_entries.setter
            def max_entries(self, value: int) -> None:
                pass

        return Elsewhere

    states = []
    for table_type in (NativeTable, elsewhere(ReferenceTable), elsewhere(NativeTable), NativeTable):
        table = table_type()
        for ev in (exec_ev(2, 1, 1, "a"), exec_ev(3, 2, 1, "b"), exec_ev(4, 3, 1, "c")):
            table.image_parent(ev)
            table.on_exec(ev)
        table.on_exit(ExitEvent(timestamp=1, pid=4, start_ticks=1, exit_code=0, signal=None, core_dumped=False,
                                comm="x"))
        states.append(([(i.pid, i.exec_id) for i in table.entries()], table.evicted))
    assert states[0] == states[3] == ([(2, "a"), (3, "b")], 0)
    assert states[1] == states[2] == ([(3, "b")], 1)


# -- SpanLineage.on_exit against spans._on_exit --------------------------------

class OtherSpan(ProcessSpan):
    """Not the class new_span builds: its end is set by name."""

    __slots__ = ()


class Refusal(Exception):
    pass


def ends_of(side: str, on_end_kind: str, span_type: type[ProcessSpan], table_type: type[ProcessTable]) -> object:
    """What one side's on_exit does over a known exit, an exit of a process
    the table does not know, a stale entry's exit and an exit whose span is
    gone: the spans handed to on_end (as a list, a tuple, or a callable
    that refuses the second), the table's entries, what raised."""
    lineage = LINEAGES[side](table_type())
    seen: list[tuple] = []

    def keep(span: ProcessSpan) -> None:
        seen.append((type(span).__name__, span.process.pid, span.end_ns if span.ended_by == "exit" else None,
                     span.ended_by, span.process.exit_code))

    def refuse_second(span: ProcessSpan) -> None:
        keep(span)
        if len(seen) == 2:
            raise Refusal()

    lineage.on_end = {"list": [keep, keep], "tuple": (keep,), "refusing": [refuse_second]}[on_end_kind]  # type: ignore[assignment]
    for pid in (2, 3, 4, 5):
        span = lineage.on_exec(exec_ev(pid, 1, 1, f"{pid:032x}"))
        assert span is not None
        span.__class__ = span_type
    del lineage._open[5]  # its span gone: the exit ends none
    raised = []
    for ts, (pid, ticks) in enumerate([(2, 1), (9, 1), (3, 7), (4, 1), (5, 1)], start=100):
        try:
            lineage.on_exit(ExitEvent(timestamp=ts, pid=pid, start_ticks=ticks, exit_code=ts % 7, signal=None,
                                      core_dumped=False, comm="x"))
        except Refusal:
            raised.append(pid)
    return seen, [(i.pid, i.exit_code) for i in lineage.table.entries()], sorted(lineage._open), raised


def test_on_exit_ends_the_same_spans_as_its_reference() -> None:
    for on_end_kind in ("list", "tuple", "refusing"):
        for span_type in (ProcessSpan, OtherSpan):
            for table_type in (NativeTable, ReferenceTable):
                args = (on_end_kind, span_type, table_type)
                assert ends_of("native", *args) == ends_of("reference", *args), args
    seen, entries, still_open, raised = ends_of("native", "refusing", ProcessSpan, NativeTable)  # type: ignore[misc]
    # 3's stale entry ends its span (on_drop), which the refusing on_end refuses.
    assert [s[1:4] for s in seen] == [(2, 100, "exit"), (3, None, "evicted"), (4, 103, "exit")] and raised == [3]
    assert entries == [] and still_open == []


def test_on_exit_with_an_event_without_the_fields_raises_the_same() -> None:
    got = []
    for side in ("native", "reference"):
        lineage = LINEAGES[side](NativeTable())
        lineage.on_exec(exec_ev(2, 1, 1, "a"))
        try:
            lineage.on_exit(object())  # type: ignore[arg-type]
        except Exception as e:
            got.append(type(e))
    assert got == [AttributeError, AttributeError]
