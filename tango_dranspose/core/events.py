"""Data containers handed to payloads: StreamData, EventData, ResultData.

They are slotted dataclasses rather than pydantic models because one of each is built per
event on the hot path; keyword construction and attribute names match what dranspose
payloads use (``StreamData(typ=..., frames=...)``, ``event.streams["xrd"]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol, runtime_checkable

StreamName = NewType("StreamName", str)
WorkerName = NewType("WorkerName", str)
EventNumber = NewType("EventNumber", int)
ParameterName = NewType("ParameterName", str)


@runtime_checkable
class ZeroCopyFrame(Protocol):
    """What a zero-copy ZeroMQ frame offers (``zmq.Frame``), without importing zmq here."""

    @property
    def bytes(self) -> bytes: ...

    @property
    def buffer(self) -> memoryview: ...


Frame = bytes | bytearray | memoryview | ZeroCopyFrame


def frame_bytes(frame: Any) -> bytes:
    """The frame's content as ``bytes`` (copies only when the frame is not bytes already)."""
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, bytearray | memoryview):
        return bytes(frame)
    data = getattr(frame, "bytes", None)
    if isinstance(data, bytes):
        return data
    raise TypeError(f"not a frame: {type(frame).__name__}")


def frame_buffer(frame: Any) -> memoryview:
    """A read-only view of the frame, without copying, for ``numpy.frombuffer``."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return memoryview(frame)
    buf = getattr(frame, "buffer", None)
    if buf is not None:
        return memoryview(buf)
    raise TypeError(f"not a frame: {type(frame).__name__}")


@dataclass(slots=True)
class StreamData:
    """One stream's raw frames for one event, tagged with the protocol (``typ``)."""

    typ: str
    frames: list[Any]

    @property
    def length(self) -> int:
        return len(self.frames)

    def get_bytes(self) -> StreamData:
        return StreamData(typ=self.typ, frames=[frame_bytes(f) for f in self.frames])

    def nbytes(self) -> int:
        return sum(len(frame_buffer(f)) for f in self.frames)


@dataclass(slots=True)
class InternalWorkerMessage:
    """The part of one event that one ingester sends to one worker."""

    event_number: int
    streams: dict[str, StreamData] = field(default_factory=dict)

    def get_all_frames(self) -> list[Any]:
        return [frame for stream in self.streams.values() for frame in stream.frames]


@dataclass(slots=True)
class EventData:
    """Everything one worker received for one event: ``streams`` maps stream name to data."""

    event_number: int
    streams: dict[str, StreamData] = field(default_factory=dict)

    @classmethod
    def from_internals(cls, msgs: Iterable[InternalWorkerMessage]) -> EventData:
        msgs = list(msgs)
        if not msgs:
            raise ValueError("an event needs at least one message")
        number = msgs[0].event_number
        merged: dict[str, StreamData] = {}
        for msg in msgs:
            if msg.event_number != number:
                raise ValueError(
                    f"cannot merge data of events {number} and {msg.event_number} into one event"
                )
            for name, data in msg.streams.items():
                if name in merged:
                    raise ValueError(f"stream {name!r} arrived twice for event {number}")
                merged[name] = data
        return cls(event_number=number, streams=merged)


@dataclass(slots=True)
class ResultData:
    """A worker's result for one event, as the reducer receives it."""

    event_number: int
    worker: str
    payload: Any
    parameters_hash: str | None = None
