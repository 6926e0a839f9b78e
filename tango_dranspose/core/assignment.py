"""Assignment: which real worker gets which frames of which event.

The engine walks the trigger map in event order. Every event it hands to a worker costs that
worker one slot of capacity; workers give slots back with :meth:`Assigner.ready` when they
finish. A virtual worker with a constraint is bound, on first use within one occurrence of a
part, to the free worker with matching tags that has waited longest; later frames with the same
constraint follow it (and wait for it when it is busy, which keeps each worker's events in
order). A virtual worker without a constraint is a broadcast to every worker with matching
tags. No I/O: the replay and the distributed scheduler both drive this class.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tango_dranspose.core.triggermap import VW, EventSpec, TriggerMap, TriggerMapError


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    name: str
    tags: frozenset[str] = frozenset({"generic"})


@dataclass(slots=True)
class Assignment:
    """One event's routing: stream -> worker names; ``()`` = read and discard.

    Streams without a frame in this event are absent.
    """

    event_number: int
    streams: dict[str, tuple[str, ...]]
    workers: tuple[str, ...] = field(default=())
    occurrence: int = 0
    # Constraint -> (bound worker, tags asked for): the event's share of each placement group.
    constraints: dict[int, tuple[str, frozenset[str]]] = field(default_factory=dict)
    closing: tuple[int, ...] = ()  # constraints this event uses for the last time

    def streams_for(self, worker: str) -> list[str]:
        return [s for s, ws in self.streams.items() if worker in ws]


class NotEnoughWorkers(TriggerMapError):
    """The map cannot be served by the workers at hand."""


def check_workers(tmap: TriggerMap, workers: Iterable[WorkerSpec]) -> None:
    """Refuse a map the workers cannot serve, saying what is missing."""
    workers = list(workers)
    need = tmap.min_workers()
    if len(workers) < need:
        raise NotEnoughWorkers(
            f"the map puts up to {need} distinct constraints in one event, "
            f"but only {len(workers)} worker(s) exist"
        )
    for tags in sorted(tmap.tag_sets(), key=sorted):
        if not any(tags <= w.tags for w in workers):
            raise NotEnoughWorkers(
                f"no worker has the tags {sorted(tags)} the map asks for "
                f"(workers: {', '.join(f'{w.name}{sorted(w.tags)}' for w in workers) or 'none'})"
            )


class Assigner:
    """Turns a trigger map into assignments as worker capacity allows."""

    def __init__(self, tmap: TriggerMap, workers: Iterable[WorkerSpec], *, slots: int = 1) -> None:
        self.workers = list(workers)
        check_workers(tmap, self.workers)
        self.map = tmap
        self._tags = {w.name: w.tags for w in self.workers}
        self._free: dict[str, int] = dict.fromkeys(self._tags, slots)
        # Workers with free slots, longest waiting first.
        self._waiting: OrderedDict[str, None] = OrderedDict.fromkeys(self._tags)
        self._events: Iterator[EventSpec] = tmap.iter_events()
        self._pending: EventSpec | None = None
        self._occurrence = -2
        self._bound: dict[int, str] = {}
        self._broadcast: dict[frozenset[str], tuple[str, ...]] = {}
        self._last_rows: dict[str, dict[int, int]] = {}
        self.next_event = 0
        self.done = len(tmap) == 0

    # -- the crew changes during a scan ----------------------------------------------------

    @property
    def occurrence(self) -> int:
        return self._occurrence

    def free(self, worker: str) -> int:
        return self._free.get(worker, 0)

    def worker_names(self) -> list[str]:
        return [w.name for w in self.workers]

    def remove_worker(self, worker: str) -> None:
        """``worker`` is gone: it gets nothing more; constraints bound to it must be rebound."""
        self.workers = [w for w in self.workers if w.name != worker]
        self._tags.pop(worker, None)
        self._free.pop(worker, None)
        self._waiting.pop(worker, None)
        self._broadcast.clear()
        for constraint in [c for c, w in self._bound.items() if w == worker]:
            del self._bound[constraint]

    def add_worker(self, spec: WorkerSpec, slots: int) -> None:
        """A worker (re)joins the running scan with ``slots`` free slots."""
        self.remove_worker(spec.name)
        self.workers.append(spec)
        self._tags[spec.name] = spec.tags
        self._free[spec.name] = 0
        self._broadcast.clear()
        self.ready(spec.name, slots)

    def rebind(self, occurrence: int, constraint: int, worker: str) -> None:
        """Later events of ``constraint`` in this occurrence go to ``worker``."""
        if occurrence == self._occurrence:
            self._bound[constraint] = worker

    def take(self, worker: str, slots: int) -> None:
        """``worker`` was handed ``slots`` events outside the map's order (a re-dispatch)."""
        for _ in range(slots):
            if worker in self._free:
                self._take(worker)

    def ready(self, worker: str, slots: int = 1) -> None:
        """``worker`` finished ``slots`` events (or announces initial capacity)."""
        free = self._free[worker] + slots
        self._free[worker] = free
        if free > 0 and worker not in self._waiting:
            self._waiting[worker] = None

    def _take(self, worker: str) -> None:
        free = self._free[worker] - 1
        self._free[worker] = free
        if free <= 0:
            self._waiting.pop(worker, None)
        else:
            self._waiting.move_to_end(worker)

    def _recipients(self, tags: frozenset[str]) -> tuple[str, ...]:
        found = self._broadcast.get(tags)
        if found is None:
            found = tuple(w.name for w in self.workers if tags <= w.tags)
            self._broadcast[tags] = found
        return found

    def _pick(self, vw: VW, taken: set[str]) -> str | None:
        # Prefer a worker not already in this event, so constraints spread out.
        fallback = None
        for name in self._waiting:
            if vw.tags <= self._tags[name]:
                if name not in taken:
                    return name
                fallback = fallback or name
        if fallback is None:
            for name in taken:
                if vw.tags <= self._tags[name]:
                    return name
        return fallback

    def next(self) -> Assignment | None:
        """The next event's assignment, or None when done or waiting for a free worker."""
        if self.done:
            return None
        spec = self._pending
        if spec is None:
            spec = next(self._events, None)
            if spec is None:
                self.done = True
                return None
        if spec.occurrence != self._occurrence:
            self._occurrence = spec.occurrence
            self._bound.clear()
        plan = self._plan(spec)
        if plan is None:
            self._pending = spec
            return None
        self._pending = None
        streams, new_bindings, recipients, constraints = plan
        self._bound.update(new_bindings)
        for name in recipients:
            self._take(name)
        self.next_event = spec.event_number + 1
        closing: tuple[int, ...] = ()
        if constraints:
            last = self._last_rows.get(spec.part)
            if last is None:
                last = self._last_rows[spec.part] = self.map.parts[spec.part].last_rows()
            closing = tuple(c for c in constraints if last.get(c) == spec.row)
        return Assignment(
            spec.event_number, streams, tuple(recipients), spec.occurrence, constraints, closing
        )

    def _plan(
        self, spec: EventSpec
    ) -> (
        tuple[
            dict[str, tuple[str, ...]],
            dict[int, str],
            list[str],
            dict[int, tuple[str, frozenset[str]]],
        ]
        | None
    ):
        streams: dict[str, tuple[str, ...]] = {}
        new: dict[int, str] = {}
        recipients: dict[str, None] = {}
        constraints: dict[int, tuple[str, frozenset[str]]] = {}
        for stream, cell in spec.items():
            if cell is None:
                continue
            names: dict[str, None] = {}
            for vw in cell:
                if vw.constraint is None:
                    for each in self._recipients(vw.tags):
                        names[each] = None
                    continue
                bound = self._bound.get(vw.constraint) or new.get(vw.constraint)
                if bound is None:
                    bound = self._pick(vw, set(recipients))
                    if bound is None:
                        return None
                    new[vw.constraint] = bound
                elif bound not in recipients and self._free[bound] <= 0:
                    return None
                names[bound] = None
                seen = constraints.get(vw.constraint)
                constraints[vw.constraint] = (bound, vw.tags if seen is None else seen[1] | vw.tags)
            streams[stream] = tuple(names)
            recipients.update(names)
        return streams, new, list(recipients), constraints

    def __iter__(self) -> Iterator[Assignment]:
        """Assign everything, as if every worker were always free (for tests and planning)."""
        while not self.done:
            item = self.next()
            if item is None:
                if self.done:
                    return
                for name in self._tags:
                    if self._free[name] <= 0:
                        self.ready(name, 1 - self._free[name])
                continue
            yield item
