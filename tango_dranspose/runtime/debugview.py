"""What a debug worker keeps of the events it received, for people to look at during a scan.

Per stream: the parsed message as text (its fields, without the data) and, when the message
carries an image or a spectrum, a copy of it. Frames that do not parse are shown as what was
received (frame count and sizes) with the parser's complaint.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tango_dranspose.core.events import EventData, frame_bytes
from tango_dranspose.streams import get_protocol

MAX_TEXT = 2000
MAX_ARRAY_BYTES = 16 << 20  # bigger images are described, not kept


@dataclass(frozen=True)
class StreamView:
    text: str
    array: np.ndarray | None = None


@dataclass(frozen=True)
class EventView:
    event: int
    streams: dict[str, StreamView] = field(default_factory=dict)


def _fields(msg: Any) -> str:
    dump = getattr(msg, "model_dump", None)
    if dump is None:
        return repr(msg)[:MAX_TEXT]
    try:
        items = dump(exclude={"data", "buffer"})
    except Exception:  # a model whose extra fields cannot be dumped: show its repr
        return repr(msg)[:MAX_TEXT]
    body = ", ".join(f"{k}={v!r}" for k, v in items.items())
    return f"{type(msg).__name__}({body})"[:MAX_TEXT]


def view_stream(typ: str, data: Any) -> StreamView:
    try:
        msg = get_protocol(typ).parse(data)
    except Exception as exc:
        sizes = [len(frame_bytes(f)) for f in data.frames]
        return StreamView(f"{typ}: {len(sizes)} frame(s) of {sizes} bytes; not parsed: {exc}")
    text = f"{typ} {_fields(msg)}"
    arr = getattr(msg, "data", None)
    if isinstance(arr, np.ndarray) and arr.ndim in (1, 2) and arr.dtype.kind in "biuf":
        if arr.nbytes <= MAX_ARRAY_BYTES:
            return StreamView(text, np.array(arr, copy=True))
        text += f" (data {arr.shape} {arr.dtype} too large to keep)"
    return StreamView(text)


def view_event(event: EventData) -> EventView:
    return EventView(
        event.event_number,
        {name: view_stream(data.typ, data) for name, data in sorted(event.streams.items())},
    )


class DebugBuffer:
    """The last ``size`` events (written by the processing thread, read by the loop)."""

    def __init__(self, size: int) -> None:
        self.events: deque[EventView] = deque(maxlen=max(size, 1))

    def keep(self, event: EventData) -> None:
        self.events.append(view_event(event))

    def snapshot(self) -> list[EventView]:
        return list(self.events)
