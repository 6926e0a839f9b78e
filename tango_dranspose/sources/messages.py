"""Replayable sequences of upstream messages: from capture files or synthetic generators.

A :class:`MessageSource` starts its sequence over on every ``messages()`` call, which is how a
simulator repeats a scan. Messages are lists of frames (``bytes``); for the byte-stream
protocol (PandA position capture) each frame is a chunk to write to the socket.

Synthetic sources build their messages with the protocol modules' ``build_*`` helpers, so what
a simulator sends is exactly what the framers and parsers are tested against.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tango_dranspose.core.capture import (
    CaptureError,
    TruncatedCapture,
    capture_kind,
    read_dump,
    read_raw_capture,
)
from tango_dranspose.streams import codecs, pcap, positioncap, protocols, sardana, stream1

log = logging.getLogger(__name__)

Message = list[bytes]

_SNIFF_MESSAGES = 50


@dataclass(frozen=True)
class MessageSource:
    """A named, replayable message sequence; ``typ`` is its protocol when known."""

    name: str
    typ: str | None
    factory: Callable[[], Iterable[Message]]
    count: int | None = None
    """Messages per sequence, when known without reading it all."""

    def messages(self) -> Iterator[Message]:
        return iter(self.factory())


# --- capture files -----------------------------------------------------------------------------


def _detect_typ(path: Path) -> str | None:
    try:
        for message in itertools.islice(read_raw_capture(path), _SNIFF_MESSAGES):
            for proto in protocols().values():
                if proto.framer.detect(message):
                    return proto.typ
    except TruncatedCapture:
        pass
    return None


def _until_truncation(records: Iterator[Message], path: Path) -> Iterator[Message]:
    try:
        yield from records
    except TruncatedCapture as exc:
        log.warning("%s", exc)


def _dump_stream(path: Path, stream: str) -> Iterator[Message]:
    for record in read_dump(path):
        data = record.streams.get(stream)
        if data is not None:
            yield [bytes(f) for f in data.frames]


def capture_source(path: str | os.PathLike[str], stream: str | None = None) -> MessageSource:
    """The messages of a capture file.

    A raw upstream capture gives its records unchanged (one message each). An ingester dump
    gives the frames of one stream per event (one message each); ``stream`` names it when the
    dump holds several. A truncated file plays its complete records and logs where it stopped.
    """
    p = Path(path)
    if not p.is_file():
        raise CaptureError(f"{p}: no such capture file")
    kind = capture_kind(p)
    if kind == "empty":
        raise CaptureError(f"{p}: the capture is empty")
    if kind == "raw":
        if stream is not None:
            raise CaptureError(f"{p} is a raw capture of one upstream; it has no stream names")
        return MessageSource(
            p.name, _detect_typ(p), lambda: _until_truncation(read_raw_capture(p), p)
        )
    first = next(read_dump(p))
    names = sorted(first.streams)
    if stream is None:
        if len(names) != 1:
            raise CaptureError(f"{p} holds the streams {', '.join(names)}; choose one")
        stream = names[0]
    elif stream not in first.streams:
        raise CaptureError(f"{p} has no stream {stream!r}; it holds {', '.join(names)}")
    typ = first.streams[stream].typ
    chosen = stream
    return MessageSource(
        f"{p.name}:{chosen}", typ, lambda: _until_truncation(_dump_stream(p, chosen), p)
    )


# --- synthetic generators ----------------------------------------------------------------------


def stins_source(
    frames: int = 10,
    shape: Sequence[int] = (128, 128),
    dtype: str = "uint16",
    compression: str = "none",
    filename: str = "",
    distinct: int = 8,
) -> MessageSource:
    """A STINS scan: header, ``frames`` images with a diffraction ring, series_end.

    Only ``distinct`` different images are computed (noise differs by seed) and then reused, so
    that generating frames does not limit a benchmark.
    """
    if len(shape) != 2:
        raise ValueError(f"a STINS image shape has two numbers, got {list(shape)}")
    rows, cols = int(shape[0]), int(shape[1])
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        raise ValueError(f"{dtype!r} is not a numpy dtype (e.g. uint16, uint32, float32)") from None
    if kind not in "uif":
        raise ValueError(f"STINS images are integer or float, not {dtype!r}")
    # Fail now, not in the middle of serving: codecs raise ValueErrors naming what is known.
    codecs.compress(np.zeros((1, 8), dtype), compression)
    radius = min(rows, cols) / 3

    def image(seed: int) -> np.ndarray:
        # diffraction_ring draws integer counts; floats get the same counts converted.
        counts = stream1.diffraction_ring(
            (rows, cols), radius=radius, seed=seed, dtype=dtype if kind in "ui" else "uint32"
        )
        return counts if kind in "ui" else counts.astype(dtype)

    def generate() -> Iterator[Message]:
        cache = [image(i) for i in range(max(1, min(distinct, frames)))]
        yield stream1.build_header(filename=filename, msg_number=0)
        for i in range(frames):
            yield stream1.build_image(cache[i % len(cache)], i, i + 1, compression=compression)
        yield stream1.build_end(frames + 1)

    return MessageSource(f"stins-{rows}x{cols}-{dtype}", stream1.TYP, generate, frames + 2)


def pcap_source(rows: int = 100, rows_per_message: int = 15) -> MessageSource:
    """A PandA PCAP acquisition over ZMQ: series-start, rows in vectorised messages, series-end."""
    if rows_per_message < 1:
        raise ValueError("rows_per_message must be at least 1")

    def generate() -> Iterator[Message]:
        return pcap.build_scan(pcap.rotation_rows(rows), rows_per_message)

    messages = -(-rows // rows_per_message) + 2
    return MessageSource(f"pcap-{rows}", pcap.TYP, generate, messages)


def positioncap_source(rows: int = 10) -> MessageSource:
    """A PandA position capture arm: the header, one value line per row, ``END n Disarmed``;
    each a separate chunk, so that an interval paces rows."""

    def generate() -> Iterator[Message]:
        data = positioncap.rotation_rows(rows)
        yield [positioncap.build_header()]
        for row in data:
            yield [positioncap.build_values(row)]
        yield [positioncap.build_end(len(data))]

    return MessageSource(f"positioncap-{rows}", positioncap.TYP, generate, rows + 2)


DEFAULT_MOTORS = ("tom_ry",)
DEFAULT_COUNTERS = ("tango://localhost:10000/expchan/orca_ctrl/1",)


def sardana_source(
    points: int = 10,
    motors: Sequence[str] = DEFAULT_MOTORS,
    counters: Sequence[str] = DEFAULT_COUNTERS,
    period: float = 0.1,
) -> MessageSource:
    """A Sardana scan as the recorder posts it: DataDescription, ``points`` RecordData,
    RecordEnd. Motors move linearly from 0 to 180; counters count ``1000 * (point + 1)``."""

    def generate() -> Iterator[Message]:
        yield sardana.build_data_description(
            motors, counters, total_scan_intervals=max(points - 1, 0)
        )
        span = max(points - 1, 1)
        for i in range(points):
            values: dict[str, float] = {m: 180.0 * i / span for m in motors}
            values.update({c: 1000.0 * (i + 1) for c in counters})
            yield sardana.build_record_data(i, values, timestamp=period * i)
        yield sardana.build_record_end()

    return MessageSource(f"sardana-{points}", sardana.TYP, generate, points + 2)


GENERATORS = ("stins", "pcap", "positioncap", "sardana")


__all__ = [
    "GENERATORS",
    "Message",
    "MessageSource",
    "capture_source",
    "pcap_source",
    "positioncap_source",
    "sardana_source",
    "stins_source",
]
