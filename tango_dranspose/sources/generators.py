"""Replay inputs as event generators: what every input offers, merging, looping, coded sources.

Every replay input (capture file, HDF5 file, a user's source class) is an :class:`EventSource`:
named streams and ``events()`` yielding ``(event_number, {stream: StreamData})`` in event order,
plus the drops it counted and, for files, where a truncated one stopped.

A *coded source* follows dranspose's ``replay --source module:Class`` contract: the class is
constructed without arguments and ``get_source_generators()`` returns a list of generators, each
yielding ``InternalWorkerMessage(event_number, streams={name: StreamData(typ, frames)})`` in
increasing event order; messages of the same event number from several generators form one
event. dranspose stops at the first exhausted generator; here every generator runs to its end,
so a source whose generators end at different events loses nothing.
"""

from __future__ import annotations

import heapq
import logging
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tango_dranspose.core.capture import CaptureError
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.payload import PayloadError, load_class
from tango_dranspose.streams.base import DropCounter

log = logging.getLogger(__name__)

Event = tuple[int, dict[str, StreamData]]
_END = object()  # a generator's end, told apart from a generator yielding None


class EventSource(Protocol):
    """One replay input. ``CaptureSource`` (capture files) has this shape too.

    ``events()`` may be called again for another pass over the input (``--loop``); ``drops``
    then counts the drops of every pass, each once.
    """

    @property
    def streams(self) -> tuple[str, ...]: ...

    @property
    def drops(self) -> DropCounter: ...

    @property
    def truncated(self) -> str | None: ...

    def events(self) -> Iterator[Event]: ...


def merge(
    iterators: Iterable[Iterator[Event]], drops: DropCounter | None = None
) -> Iterator[Event]:
    """Events of several in-order iterators merged by event number.

    Only one event per iterator is held in memory. A stream that two iterators deliver for the
    same event keeps its first frame; the second is counted in ``drops`` when given.
    """
    iters = list(iterators)
    heads: list[tuple[int, int, dict[str, StreamData]]] = []
    for idx, it in enumerate(iters):
        first = next(it, None)
        if first is not None:
            heads.append((first[0], idx, first[1]))
    heapq.heapify(heads)
    current_number: int | None = None
    current: dict[str, StreamData] = {}
    while heads:
        number, idx, streams = heapq.heappop(heads)
        if number != current_number:
            if current_number is not None:
                yield current_number, current
            current_number, current = number, dict(streams)
        else:
            for name, data in streams.items():
                if name in current:
                    if drops is not None:
                        drops.add(f"stream {name} given twice for one event", name)
                    continue
                current[name] = data
        nxt = next(iters[idx], None)
        if nxt is not None:
            heapq.heappush(heads, (nxt[0], idx, nxt[1]))
    if current_number is not None:
        yield current_number, current


def merged_events(sources: Sequence[EventSource]) -> Iterator[Event]:
    """All sources' events merged by event number (each source is in event order)."""
    return merge(s.events() for s in sources)


def repeated(make: Callable[[], Iterator[Event]], times: int) -> Iterator[Event]:
    """``make()``'s events ``times`` times over, renumbered so that numbers keep increasing:
    each repetition starts one after the last event of the previous one."""
    offset = 0
    for _ in range(times):
        last: int | None = None
        for number, streams in make():
            last = number
            yield number + offset, streams
        if last is None:
            return  # an empty input stays empty however often it is repeated
        offset += last + 1


@dataclass
class LoopedSource:
    """A source read ``times`` times over (``--loop``), with increasing event numbers."""

    inner: EventSource
    times: int

    @property
    def streams(self) -> tuple[str, ...]:
        return self.inner.streams

    @property
    def drops(self) -> DropCounter:
        return self.inner.drops

    @property
    def truncated(self) -> str | None:
        return self.inner.truncated

    def events(self) -> Iterator[Event]:
        return repeated(self.inner.events, self.times)


class FrameQueues:
    """Frames of every stream in upstream order, pulled one at a time (for map-driven replay).

    Each source is read only as far as a pull needs, so a stream the map asks for rarely does
    not make the other sources' frames pile up.
    """

    def __init__(self, sources: Sequence[EventSource]) -> None:
        self._owner: dict[str, int] = {}
        self._iters = [s.events() for s in sources]
        self._queues: dict[str, deque[StreamData]] = {}
        for idx, source in enumerate(sources):
            for stream in source.streams:
                self._owner[stream] = idx
                self._queues[stream] = deque()

    @property
    def streams(self) -> set[str]:
        return set(self._owner)

    def pull(self, stream: str) -> StreamData | None:
        """The stream's next frame, or None when its upstream has ended."""
        queue = self._queues[stream]
        it = self._iters[self._owner[stream]]
        while not queue:
            item = next(it, None)
            if item is None:
                return None
            for name, data in item[1].items():
                self._queues.setdefault(name, deque()).append(data)
        return queue.popleft()

    def leftover(self) -> dict[str, int]:
        """Frames never asked for, per stream (drains the sources)."""
        for it in self._iters:
            for _, streams in it:
                for name, data in streams.items():
                    self._queues.setdefault(name, deque()).append(data)
        return {name: len(q) for name, q in self._queues.items() if q}


def check_unique_streams(sources: Sequence[EventSource], names: Sequence[str]) -> None:
    """Refuse two inputs feeding one stream (``names[i]`` says what ``sources[i]`` is)."""
    owner: dict[str, str] = {}
    for source, name in zip(sources, names, strict=True):
        for stream in source.streams:
            if stream in owner:
                raise CaptureError(
                    f"stream {stream!r} comes from both {owner[stream]} and {name}; "
                    "name one of them as STREAM=PATH"
                )
            owner[stream] = name


# -- coded sources (dranspose's replay --source) ---------------------------------------------


@dataclass
class SourceFailure:
    """An exception raised by a coded source's generator; that generator ends there."""

    source: str
    error: str
    traceback: str


def _as_event(item: Any, what: str) -> Event:
    """A generator's item as an event; dranspose's ``InternalWorkerMessage`` and ours (and any
    object with ``event_number`` and ``streams`` of ``typ``/``frames``) are accepted."""
    number = getattr(item, "event_number", None)
    streams = getattr(item, "streams", None)
    if not isinstance(number, int) or isinstance(number, bool) or not isinstance(streams, dict):
        raise TypeError(
            f"{what} yielded {type(item).__name__}, expected an InternalWorkerMessage "
            "(event_number: int, streams: {name: StreamData})"
        )
    out: dict[str, StreamData] = {}
    for name, data in streams.items():
        if isinstance(data, StreamData):
            out[str(name)] = data
            continue
        typ, frames = getattr(data, "typ", None), getattr(data, "frames", None)
        if not isinstance(typ, str) or not isinstance(frames, list):
            raise TypeError(
                f"{what} yielded stream {name!r} as {type(data).__name__}, expected StreamData"
            )
        out[str(name)] = StreamData(typ, frames)
    return number, out


class CodeSource:
    """The events of a user's source class (``--source package.module:Class``).

    The class is constructed once per pass over the input (``--loop`` builds it again, as
    generators cannot be rewound). An exception inside a generator ends that generator and is
    kept in :attr:`failures`; the replay counts it like a payload error.
    """

    def __init__(self, spec: str, search: Sequence[str | Path] = ()) -> None:
        self.spec = spec
        self.cls = load_class(spec, search)
        self.drops = DropCounter()
        self.truncated: str | None = None
        self.failures: list[SourceFailure] = []
        # The first pass's generators, each with its first event already read: the streams
        # must be known before replaying (a map names them) and generators cannot be rewound.
        self._primed: list[Iterator[Event]] | None = []
        names: dict[str, int] = {}
        for index, gen in enumerate(self._generators()):
            try:
                first = next(gen, _END)
                head = None if first is _END else _as_event(first, self._what(index))
            except Exception as exc:
                raise PayloadError(
                    f"{self._what(index)} failed on its first event: {type(exc).__name__}: {exc}"
                ) from exc
            if head is None:
                continue
            for stream in head[1]:
                if stream in names:
                    raise PayloadError(
                        f"{spec}: generators {names[stream]} and {index} both start stream "
                        f"{stream!r}"
                    )
                names[stream] = index
            self._primed.append(self._checked(index, gen, head))
        self.streams: tuple[str, ...] = tuple(names)

    def _what(self, index: int) -> str:
        return f"source {self.spec} generator {index}"

    def _generators(self) -> list[Iterator[Any]]:
        try:
            instance = self.cls()
            gens = instance.get_source_generators()
            out = [iter(g) for g in gens]
        except Exception as exc:
            raise PayloadError(
                f"{self.spec}: constructing it and calling get_source_generators() failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return out

    def _checked(self, index: int, gen: Iterator[Any], head: Event | None) -> Iterator[Event]:
        """``gen``'s events, checked: wrong items and user exceptions end it (as a failure),
        out-of-order event numbers are dropped (merging relies on the order)."""
        what = self._what(index)
        last = -1
        if head is not None:
            last = head[0]
            yield head
        while True:
            try:
                item = next(gen, _END)
                if item is _END:
                    return
                number, streams = _as_event(item, what)
            except Exception as exc:
                self.failures.append(
                    SourceFailure(what, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
                log.error("%s failed: %s\n%s", what, exc, traceback.format_exc())
                return
            if number <= last:
                self.drops.add(f"event {number} after event {last} (not increasing)", what)
                continue
            last = number
            yield number, streams

    def events(self) -> Iterator[Event]:
        primed, self._primed = self._primed, None
        if primed is None:  # a later pass (--loop): new generators from a new instance
            primed = [self._checked(i, g, None) for i, g in enumerate(self._generators())]
        return merge(primed, self.drops)
