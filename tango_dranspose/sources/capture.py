"""Capture-file playback: events of one or more streams read from files.

A capture is named on the command line as ``[STREAM[:PROTOCOL]=]PATH``. Ingester dumps carry
their stream names and protocols. Raw upstream captures are cut into events by the protocol's
framer; the protocol is detected from the start message unless given, and the stream is named
after the file unless given.
"""

from __future__ import annotations

import heapq
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tango_dranspose.core.capture import (
    CaptureError,
    DumpRecord,
    TruncatedCapture,
    capture_kind,
    read_dump,
    read_pickle_dump,
    read_raw_capture,
)
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import get_protocol, protocols
from tango_dranspose.streams.base import DropCounter, Framer, safe_feed, safe_flush

_SPEC = re.compile(r"^(?P<stream>[A-Za-z0-9_.\-]+)(?::(?P<protocol>[A-Za-z0-9_]+))?=(?P<path>.+)$")


@dataclass(frozen=True)
class CaptureSpec:
    path: Path
    stream: str | None = None
    protocol: str | None = None

    @classmethod
    def parse(cls, text: str) -> CaptureSpec:
        match = _SPEC.match(text)
        if match and not Path(text).exists():
            return cls(Path(match["path"]), match["stream"], match["protocol"])
        return cls(Path(text))


def _default_stream_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".cbors", ".cbor", ".pkls"):
        name = name.removesuffix(suffix)
    return name or "stream"


@dataclass
class CaptureSource:
    """One file's events: ``(event_number, {stream: StreamData})`` in event order."""

    spec: CaptureSpec
    trust_pickle: bool = False
    kind: str = ""
    streams: tuple[str, ...] = ()
    drops: DropCounter = field(default_factory=DropCounter)
    framer: Framer | None = None
    truncated: str | None = None  # where a truncated file stopped, after its complete records

    def __post_init__(self) -> None:
        path = self.spec.path
        if not path.is_file():
            raise CaptureError(f"{path}: no such capture file")
        if path.suffix == ".pkls" or path.name.endswith(".pkls.gz"):
            if not self.trust_pickle:
                raise CaptureError(
                    f"{path} is a pickle dump; reading it runs code from the file. Pass "
                    "--trust-pickle only for files you trust, or convert them to .cbors"
                )
            self.kind = "pickle-dump"
        else:
            self.kind = capture_kind(path)
        if self.kind in ("dump", "pickle-dump"):
            first = next(self._dump_records(), None)
            self.streams = tuple(sorted(first.streams)) if first else ()
        elif self.kind == "raw":
            self.framer = self._make_framer()
            self.streams = (self.spec.stream or _default_stream_name(path),)
        else:
            self.streams = ()

    def _dump_records(self) -> Iterator[DumpRecord]:
        if self.kind == "pickle-dump":
            return read_pickle_dump(self.spec.path, trust=self.trust_pickle)
        return read_dump(self.spec.path)

    def _make_framer(self) -> Framer:
        if self.spec.protocol:
            try:
                return get_protocol(self.spec.protocol).framer()
            except KeyError as exc:
                raise CaptureError(f"{self.spec.path}: {exc.args[0]}") from None
        for index, message in enumerate(read_raw_capture(self.spec.path)):
            for proto in protocols().values():
                if proto.framer.detect(message):
                    return proto.framer()
            if index >= 50:
                break
        raise CaptureError(
            f"{self.spec.path}: cannot tell which protocol this raw capture uses; name it as "
            f"STREAM:PROTOCOL=PATH (protocols: {', '.join(sorted(protocols()))})"
        )

    def events(self) -> Iterator[tuple[int, dict[str, StreamData]]]:
        """Every complete event; a truncated file ends early and says so in ``truncated``."""
        self.truncated = None
        try:
            yield from self._events()
        except TruncatedCapture as exc:
            self.truncated = str(exc)

    def _events(self) -> Iterator[tuple[int, dict[str, StreamData]]]:
        if self.kind in ("dump", "pickle-dump"):
            for rec in self._dump_records():
                yield rec.event_number, rec.streams
            return
        if self.framer is None:
            return
        framer = self.framer
        framer.reset()
        stream = self.streams[0]
        number = 0
        for message in read_raw_capture(self.spec.path):
            for framed in safe_feed(framer, message):
                yield number, {stream: framed.data}
                number += 1
        for framed in safe_flush(framer):
            yield number, {stream: framed.data}
            number += 1
        self.drops.merge(framer.drops)


def open_captures(
    specs: Sequence[str | CaptureSpec], *, trust_pickle: bool = False
) -> list[CaptureSource]:
    """Open every capture; two files feeding the same stream are refused."""
    sources = []
    owner: dict[str, Path] = {}
    for item in specs:
        spec = item if isinstance(item, CaptureSpec) else CaptureSpec.parse(os.fspath(item))
        source = CaptureSource(spec, trust_pickle=trust_pickle)
        for stream in source.streams:
            if stream in owner:
                raise CaptureError(
                    f"stream {stream!r} comes from both {owner[stream]} and {spec.path}; "
                    "name one of them as STREAM=PATH"
                )
            owner[stream] = spec.path
        sources.append(source)
    return sources


def merged_events(sources: Sequence[CaptureSource]) -> Iterator[tuple[int, dict[str, StreamData]]]:
    """All sources' events merged by event number (each source is in event order)."""
    iters = [s.events() for s in sources]
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
                current.setdefault(name, data)
        nxt = next(iters[idx], None)
        if nxt is not None:
            heapq.heappush(heads, (nxt[0], idx, nxt[1]))
    if current_number is not None:
        yield current_number, current


class StreamQueues:
    """Frames of every stream in upstream order, pulled one at a time (for map-driven replay)."""

    def __init__(self, sources: Sequence[CaptureSource]) -> None:
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
