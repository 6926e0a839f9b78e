"""Trigger maps: which frames of which streams form an event, and who must process it.

A map is a sequence of named parts; a part holds, per stream, one cell per event. Parts are
compiled once into rows and never expanded: a 1000-row part repeated 980 times costs 1000 rows
of memory and an offset table of 980 entries. Events are looked up (``event(n)``) or iterated
(``iter_events()``) lazily. Formats and semantics: docs/trigger-maps.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tango_dranspose.core.paramfiles import NestingError, loads_json

DEFAULT_TAGS: frozenset[str] = frozenset({"generic"})
# Cells (events x streams of the parts as written) a map may have: compiling takes about 3 s
# per million on a beamline node. A long scan repeats parts through a sequence instead.
MAX_CELLS = 4_000_000
WRAP_PART = "<wrap>"


class TriggerMapError(ValueError):
    """An invalid trigger map; the message names the part, stream and index."""


class VirtualWorker(BaseModel):
    """A placement request: tags the real worker must have; equal constraints share a worker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tags: frozenset[str] = Field(default=DEFAULT_TAGS)
    constraint: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tags": sorted(self.tags), "constraint": self.constraint}


@dataclass(frozen=True, slots=True)
class VW:
    """Compiled virtual worker (hashable, cheap)."""

    constraint: int | None
    tags: frozenset[str]


# One stream in one event: None = no frame; () = read and discard; else who gets it.
Cell = tuple[VW, ...] | None


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    streams: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    max_constraints: int

    def __len__(self) -> int:
        return len(self.rows)

    def last_rows(self) -> dict[int, int]:
        """Constraint -> the last row of this part that uses it: where its group closes."""
        last: dict[int, int] = {}
        for index, row in enumerate(self.rows):
            for cell in row:
                if cell:
                    for vw in cell:
                        if vw.constraint is not None:
                            last[vw.constraint] = index
        return last


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What the map says about one event."""

    event_number: int
    occurrence: int  # index into the sequence; -1 for the start wrap, len(sequence) for the end
    part: str
    streams: tuple[str, ...]
    cells: tuple[Cell, ...]
    row: int = 0  # index of the row within its part

    def items(self) -> Iterator[tuple[str, Cell]]:
        return zip(self.streams, self.cells, strict=True)


class _Interner:
    def __init__(self) -> None:
        self._vws: dict[tuple[int | None, frozenset[str]], VW] = {}
        self._cells: dict[tuple[VW, ...], tuple[VW, ...]] = {}

    def vw(self, constraint: int | None, tags: frozenset[str]) -> VW:
        key = (constraint, tags)
        found = self._vws.get(key)
        if found is None:
            found = self._vws[key] = VW(constraint, tags)
        return found

    def cell(self, vws: tuple[VW, ...]) -> tuple[VW, ...]:
        return self._cells.setdefault(vws, vws)


_VW_KEYS = frozenset({"tags", "constraint"})


def _plain_vw(item: Any, interner: _Interner) -> VW | None:
    """The common case, without pydantic: ``{"constraint": int|None, "tags": [str, ...]}``.
    A map has a cell per event and stream; validating each through a model made a
    million-cell map take 15 s."""
    if type(item) is not dict or not item.keys() <= _VW_KEYS:
        return None
    constraint = item.get("constraint")
    if constraint is not None and type(constraint) is not int:
        return None
    tags = item.get("tags")
    if tags is None:
        return interner.vw(constraint, DEFAULT_TAGS)
    if type(tags) is not list or not tags or not all(type(t) is str for t in tags):
        return None  # the model says what is wrong
    return interner.vw(constraint, frozenset(tags))


class _CellError(ValueError):
    """A bad cell; the caller adds where it is."""


def _compile_cell(raw: Any, interner: _Interner) -> Cell:
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        raw = [raw]  # a lone virtual worker is accepted as a one-element list
    if not isinstance(raw, list | tuple):
        raise _CellError(f"a cell must be null, [] or a list of virtual workers, got {raw!r}")
    vws = []
    for item in raw:
        plain = _plain_vw(item, interner)
        if plain is not None:
            vws.append(plain)
            continue
        if isinstance(item, VirtualWorker):
            vw = item
        else:
            try:
                vw = VirtualWorker.model_validate(item)
            except ValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise _CellError(f"invalid virtual worker {item!r} ({detail})") from None
        if not vw.tags:
            raise _CellError("a virtual worker needs at least one tag")
        vws.append(interner.vw(vw.constraint, vw.tags))
    if len(vws) == 1:
        return interner.cell((vws[0],))
    return interner.cell(tuple(dict.fromkeys(vws)))


def _cell_fails(cell: Any, interner: _Interner) -> bool:
    try:
        _compile_cell(cell, interner)
    except _CellError:
        return True
    return False


def _compile_part(name: str, raw: Any, interner: _Interner) -> Part:
    if not isinstance(raw, Mapping) or not raw:
        raise TriggerMapError(f"part {name!r}: must map stream names to lists of cells")
    streams = tuple(sorted(str(s) for s in raw))
    columns: list[list[Cell]] = []
    length: int | None = None
    for stream in streams:
        cells = raw[stream]
        if not isinstance(cells, list | tuple):
            raise TriggerMapError(f"part {name!r}, stream {stream!r}: must be a list of cells")
        if length is None:
            length = len(cells)
        elif len(cells) != length:
            raise TriggerMapError(
                f"part {name!r}, stream {stream!r}: has {len(cells)} events but stream "
                f"{streams[0]!r} has {length}; all streams of a part need the same length"
            )
        try:
            columns.append([_compile_cell(c, interner) for c in cells])
        except _CellError as exc:
            i = next(i for i, c in enumerate(cells) if _cell_fails(c, interner))
            raise TriggerMapError(f"part {name!r}, stream {stream!r}, index {i}: {exc}") from None
    rows = tuple(zip(*columns, strict=True)) if columns else ()
    max_constraints = 0
    for row in rows:
        distinct = {
            vw.constraint for cell in row if cell for vw in cell if vw.constraint is not None
        }
        max_constraints = max(max_constraints, len(distinct))
    return Part(name, streams, rows, max_constraints)


class TriggerMap:
    """A compiled, validated trigger map (immutable)."""

    def __init__(
        self,
        parts: Mapping[str, Any],
        sequence: Sequence[str] | None = None,
        *,
        wrap: bool = True,
    ) -> None:
        if not parts:
            raise TriggerMapError("a trigger map needs at least one part")
        cells = sum(
            len(column) if isinstance(column, list | tuple) else 1
            for p in parts.values()
            if isinstance(p, Mapping)
            for column in p.values()
        )
        if cells > MAX_CELLS:
            raise TriggerMapError(
                f"the map has {cells:,} cells, more than the {MAX_CELLS:,} accepted: write a "
                "long scan as parts repeated by a sequence (docs/trigger-maps.md)"
            )
        interner = _Interner()
        self.parts: dict[str, Part] = {
            str(n): p if isinstance(p, Part) else _compile_part(str(n), p, interner)
            for n, p in parts.items()
        }
        seq = list(self.parts) if sequence is None else [str(s) for s in sequence]
        for i, name in enumerate(seq):
            if name not in self.parts:
                raise TriggerMapError(
                    f"sequence index {i}: part {name!r} is not defined "
                    f"(parts: {', '.join(sorted(self.parts))})"
                )
        self.sequence: tuple[str, ...] = tuple(seq)
        self.wrap = wrap
        used = {n for n in self.sequence}
        self.streams: tuple[str, ...] = tuple(
            sorted({s for p in self.parts.values() for s in p.streams})
        )
        self.tags: frozenset[str] = (
            frozenset(
                t
                for n in used
                for row in self.parts[n].rows
                for cell in row
                if cell
                for vw in cell
                for t in vw.tags
            )
            or DEFAULT_TAGS
        )
        # Start index (without the wrap offset) of every occurrence, plus the total.
        self._offsets: list[int] = [0]
        for name in self.sequence:
            self._offsets.append(self._offsets[-1] + len(self.parts[name]))
        self._wrap_cell: Cell = tuple(interner.vw(None, frozenset({t})) for t in sorted(self.tags))

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj: Any, *, wrap: bool | None = None) -> TriggerMap:
        """Accept the sequence form ``{"parts", "sequence"}`` or a legacy single part.

        Text is decoded with bounded nesting; any map nested too deeply to handle is a
        :class:`TriggerMapError`, never a ``RecursionError``.
        """
        if isinstance(obj, str | bytes):
            try:
                obj = loads_json(obj)
            except NestingError as exc:
                raise TriggerMapError(f"the trigger map is {exc}") from None
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise TriggerMapError(f"the trigger map is not valid JSON: {exc}") from None
        try:
            return cls._from_decoded(obj, wrap)
        except RecursionError:
            # An already decoded value (from a socket, a device) is not bounded by loads_json.
            raise TriggerMapError("the trigger map is nested too deeply") from None

    @classmethod
    def _from_decoded(cls, obj: Any, wrap: bool | None) -> TriggerMap:
        if not isinstance(obj, Mapping):
            raise TriggerMapError(f"a trigger map is a JSON object, got {type(obj).__name__}")
        if "parts" in obj and isinstance(obj["parts"], Mapping):
            extra = set(obj) - {"parts", "sequence", "wrap"}
            if extra:
                raise TriggerMapError(f"unknown keys in a sequence map: {', '.join(sorted(extra))}")
            use_wrap = bool(obj.get("wrap", True)) if wrap is None else wrap
            sequence = obj.get("sequence")
            if sequence is not None and not isinstance(sequence, list):
                raise TriggerMapError("'sequence' must be a list of part names")
            return cls(obj["parts"], sequence, wrap=use_wrap)
        return cls({"main": obj}, wrap=True if wrap is None else wrap)

    def to_json(self) -> dict[str, Any]:
        def cell_json(cell: Cell) -> Any:
            if cell is None:
                return None
            return [{"constraint": vw.constraint, "tags": sorted(vw.tags)} for vw in cell]

        parts = {}
        for name, part in self.parts.items():
            parts[name] = {
                s: [cell_json(row[i]) for row in part.rows] for i, s in enumerate(part.streams)
            }
        return {"parts": parts, "sequence": list(self.sequence), "wrap": self.wrap}

    # -- queries ------------------------------------------------------------------------

    @property
    def data_events(self) -> int:
        return self._offsets[-1]

    def __len__(self) -> int:
        return self._offsets[-1] + (2 if self.wrap else 0)

    def min_workers(self) -> int:
        """The largest number of distinct constraints in one event."""
        return max((self.parts[n].max_constraints for n in set(self.sequence)), default=0)

    def tag_sets(self) -> set[frozenset[str]]:
        """Every tag set some virtual worker asks for (each needs a matching real worker)."""
        cached: set[frozenset[str]] | None = getattr(self, "_tag_sets", None)
        if cached is None:
            cached = self._tag_sets = self._find_tag_sets()
        return set(cached)

    def _find_tag_sets(self) -> set[frozenset[str]]:
        found: set[frozenset[str]] = {frozenset({t}) for t in self.tags} if self.wrap else set()
        for name in set(self.sequence):
            for row in self.parts[name].rows:
                for cell in row:
                    if cell:
                        found.update(vw.tags for vw in cell)
        return found

    def frames_per_stream(self) -> dict[str, int]:
        """How many upstream messages each stream must deliver (no-frame cells excluded)."""
        cached: dict[str, int] | None = getattr(self, "_frames", None)
        if cached is None:
            cached = self._frames = self._count_frames()
        return dict(cached)

    def prepare(self) -> TriggerMap:
        """Compute now what arming asks of the map (it walks every row), e.g. on a thread."""
        self.tag_sets()
        self.frames_per_stream()
        return self

    def _count_frames(self) -> dict[str, int]:
        counts = dict.fromkeys(self.streams, 2 if self.wrap else 0)
        per_part: dict[str, dict[str, int]] = {}
        for name in set(self.sequence):
            part = self.parts[name]
            per_part[name] = {
                s: sum(1 for row in part.rows if row[i] is not None)
                for i, s in enumerate(part.streams)
            }
        for name in self.sequence:
            for s, n in per_part[name].items():
                counts[s] += n
        return counts

    def event(self, event_number: int) -> EventSpec:
        total = len(self)
        if not 0 <= event_number < total:
            raise IndexError(f"event {event_number} outside the map (0..{total - 1})")
        n = event_number
        if self.wrap:
            if n == 0:
                return self._wrap_event(0, -1)
            if n == total - 1:
                return self._wrap_event(n, len(self.sequence))
            n -= 1
        occ = bisect.bisect_right(self._offsets, n) - 1
        part = self.parts[self.sequence[occ]]
        row = n - self._offsets[occ]
        return EventSpec(event_number, occ, part.name, part.streams, part.rows[row], row)

    def iter_events(self, start: int = 0) -> Iterator[EventSpec]:
        """Every event from ``start`` on, in order, without materialising the sequence."""
        number = start
        total = len(self)
        if self.wrap and number == 0:
            yield self._wrap_event(0, -1)
            number = 1
        base = 1 if self.wrap else 0
        while number < total - (1 if self.wrap else 0):
            n = number - base
            occ = bisect.bisect_right(self._offsets, n) - 1
            part = self.parts[self.sequence[occ]]
            first = n - self._offsets[occ]
            for index, row in enumerate(part.rows[first:], first):
                yield EventSpec(number, occ, part.name, part.streams, row, index)
                number += 1
        if self.wrap and number == total - 1:
            yield self._wrap_event(number, len(self.sequence))

    def _wrap_event(self, number: int, occurrence: int) -> EventSpec:
        return EventSpec(
            number, occurrence, WRAP_PART, self.streams, (self._wrap_cell,) * len(self.streams)
        )

    def describe(self) -> str:
        return (
            f"{len(self)} events ({self.data_events} data"
            f"{' + start/end' if self.wrap else ''}), streams {', '.join(self.streams)}, "
            f"{len(self.parts)} parts in a sequence of {len(self.sequence)}"
        )


def round_robin_map(streams: Sequence[str], events: int, workers: int) -> TriggerMap:
    """Data event ``i`` of every stream to its own virtual worker, cycling over ``workers``.

    Built from a part of ``workers`` rows repeated, so its size does not grow with ``events``.
    """
    workers = max(workers, 1)

    def part(rows: int) -> dict[str, list[Any]]:
        return {s: [[{"constraint": i}] for i in range(rows)] for s in streams}

    parts: dict[str, Any] = {"cycle": part(workers)}
    sequence = ["cycle"] * (events // workers)
    if events % workers:
        parts["tail"] = part(events % workers)
        sequence.append("tail")
    if not sequence:
        return TriggerMap({"empty": {s: [] for s in streams}}, [])
    return TriggerMap(parts, sequence)
