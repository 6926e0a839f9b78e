"""Dectris stream v2 (SIMPLON 1.8+, format ``cbor``), typ ``DECTRIS_STREAM2``.

Each upstream ZMQ message is one frame holding one CBOR map (RFC 8949), normally preceded by
the self-describe tag 55799, whose first key ``type`` is ``start``, ``image`` or ``end``:

* start: series configuration (``series_id, series_unique_id, arm_date, channels,
  number_of_images, image_size_x/y, flatfield/pixel_mask`` maps of arrays, ``user_data``, ...);
* image: ``series_id, image_id, real_time/start_time/stop_time`` (rationals ``[num, den]``
  seconds), ``data``: channel name -> image;
* end: ``series_id, series_unique_id``.

Arrays are RFC 8746 typed arrays, possibly compressed (``bslz4``, ``lz4``); their decoding
lives in :mod:`~tango_dranspose.streams.dectris_cbor`.

The framer forwards each message unchanged as one event (``[frame]`` for START, DATA and END).
It checks that the frame is exactly one well-formed CBOR item and reads ``type`` and
``series_id`` without decoding or copying the image payload; decompression happens in
:func:`parse`, in the worker. Images of another series than the running one are dropped.

The detector PUSHes round-robin: with several PULL clients only one of them receives the start
message. The runtime re-broadcasts that header to every worker; a framer only sees what its own
socket receives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import cbor2
import numpy as np
from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.base import (
    Framed,
    Framer,
    Kind,
    MessageModel,
    ParseError,
    Protocol,
    expect_frames,
    expect_typ,
    lookup,
    validate,
)
from tango_dranspose.streams.dectris_cbor import (
    TAG_DECTRIS_COMPRESSION,
    TAG_MULTI_DIM,
    TAG_MULTI_DIM_COLUMN_MAJOR,
    TAG_SELF_DESCRIBE,
    TYPED_ARRAY_DTYPES,
    decode_message,
    encode_array,
    peek,
)

TYP = "DECTRIS_STREAM2"


# -- models ----------------------------------------------------------------------------------


class DectrisStart(MessageModel):
    type: Literal["start"]
    series_id: int
    series_unique_id: str = ""
    arm_date: datetime | str | None = None
    channels: list[str] = Field(default_factory=list)
    number_of_images: int | None = None
    image_size_x: int | None = None
    image_size_y: int | None = None
    flatfield: dict[str, np.ndarray] = Field(default_factory=dict)
    pixel_mask: dict[str, np.ndarray] = Field(default_factory=dict)
    countrate_correction_lookup_table: np.ndarray | None = None
    threshold_energy: dict[str, float] = Field(default_factory=dict)
    user_data: Any = None


class DectrisImage(MessageModel):
    type: Literal["image"]
    series_id: int
    series_unique_id: str = ""
    image_id: int
    data: dict[str, np.ndarray]
    """Channel name (e.g. ``threshold_1``) -> image, decompressed, shape ``(y, x)``."""
    real_time: list[int] | None = None
    start_time: list[int] | None = None
    stop_time: list[int] | None = None
    series_date: datetime | str | None = None
    user_data: Any = None


class DectrisEnd(MessageModel):
    type: Literal["end"]
    series_id: int | None = None
    series_unique_id: str = ""


DectrisMessage = DectrisStart | DectrisImage | DectrisEnd
DectrisPacket: TypeAdapter[DectrisMessage] = TypeAdapter(
    Annotated[DectrisMessage, Field(discriminator="type")]
)


def rational_seconds(value: Sequence[int] | None) -> float | None:
    """Seconds of a stream v2 rational ``[numerator, denominator]``."""
    if value is None or len(value) != 2 or not value[1]:
        return None
    return value[0] / value[1]


def parse(data: StreamData) -> DectrisMessage:
    """One stream v2 event as its model, images decompressed; :class:`ParseError` if invalid."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "a stream v2 message")
    if data.length != 1:
        raise ParseError(f"a stream v2 message has 1 frame, got {data.length}")
    value = decode_message(data.frames[0])
    return validate(DectrisPacket, value, f"stream v2 {value.get('type')!r} message")


_KINDS = {"start": Kind.START, "image": Kind.DATA, "end": Kind.END}


class DectrisStream2Framer(Framer):
    """One event per stream v2 message, checked for structure only (no decompression)."""

    typ = TYP

    def __init__(self) -> None:
        super().__init__()
        self.series_id: int | None = None

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if len(message) != 1:
            return self.drop(f"message with {len(message)} frames; stream v2 sends 1", message)
        try:
            head = peek(message[0])
        except ParseError as exc:
            return self.drop("invalid CBOR message", str(exc))
        msg_type = head.get("type")
        kind = lookup(_KINDS, msg_type)
        if kind is None:
            return self.drop(f"unknown message type {msg_type!r}", message)
        if kind is Kind.DATA and self.started and not self.ended:
            series = head.get("series_id")
            if self.series_id is not None and series is not None and series != self.series_id:
                return self.drop("image of another series than the running one", message)
        events = self.forward(kind, message)
        if events and kind is Kind.START:
            self.series_id = head.get("series_id")
        return events

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        try:
            return len(message) == 1 and peek(message[0]).get("type") == "start"
        except ParseError:
            return False


# -- building messages (simulators and tests) -----------------------------------------------


def _message(fields: dict[str, Any]) -> list[bytes]:
    return [cbor2.dumps(cbor2.CBORTag(TAG_SELF_DESCRIBE, fields))]


def build_start(
    series_id: int = 1,
    series_unique_id: str = "",
    channels: Sequence[str] = ("threshold_1",),
    image_size: tuple[int, int] = (0, 0),
    number_of_images: int = 1,
    arm_date: datetime | None = None,
    flatfield: Mapping[str, np.ndarray] | None = None,
    pixel_mask: Mapping[str, np.ndarray] | None = None,
    compression: str = "none",
    user_data: Any = None,
    **extra: Any,
) -> list[bytes]:
    """A start message; ``image_size`` is numpy-ordered ``(y, x)``."""
    fields: dict[str, Any] = {
        "type": "start",
        "series_id": series_id,
        "series_unique_id": series_unique_id or f"series-{series_id}",
        "arm_date": arm_date or datetime.now(timezone.utc),
        "channels": list(channels),
        "number_of_images": number_of_images,
        "image_size_x": image_size[1],
        "image_size_y": image_size[0],
        **extra,
    }
    if flatfield is not None:
        fields["flatfield"] = {k: encode_array(v, compression) for k, v in flatfield.items()}
    if pixel_mask is not None:
        fields["pixel_mask"] = {k: encode_array(v, compression) for k, v in pixel_mask.items()}
    if user_data is not None:
        fields["user_data"] = user_data
    return _message(fields)


def build_image(
    data: np.ndarray | Mapping[str, np.ndarray],
    image_id: int,
    series_id: int = 1,
    series_unique_id: str = "",
    compression: str = "bslz4",
    real_time: tuple[int, int] = (100_000, 10_000_000),
    start_time: tuple[int, int] | None = None,
    series_date: datetime | None = None,
    user_data: Any = None,
) -> list[bytes]:
    """An image message; a bare array becomes channel ``threshold_1``."""
    channels = {"threshold_1": data} if isinstance(data, np.ndarray) else dict(data)
    start = start_time or (image_id * real_time[0], real_time[1])
    fields: dict[str, Any] = {
        "type": "image",
        "series_id": series_id,
        "series_unique_id": series_unique_id or f"series-{series_id}",
        "image_id": image_id,
        "real_time": list(real_time),
        "start_time": list(start),
        "stop_time": [start[0] + real_time[0], start[1]],
        "series_date": series_date or datetime.now(timezone.utc),
        "data": {name: encode_array(arr, compression) for name, arr in channels.items()},
    }
    if user_data is not None:
        fields["user_data"] = user_data
    return _message(fields)


def build_end(series_id: int = 1, series_unique_id: str = "") -> list[bytes]:
    return _message(
        {
            "type": "end",
            "series_id": series_id,
            "series_unique_id": series_unique_id or f"series-{series_id}",
        }
    )


PROTOCOL = Protocol(
    typ=TYP,
    framer=DectrisStream2Framer,
    parse=parse,
    description="Dectris stream v2 (SIMPLON 1.8+): one CBOR map per frame, start / image / end",
)

__all__ = [
    "PROTOCOL",
    "TAG_DECTRIS_COMPRESSION",
    "TAG_MULTI_DIM",
    "TAG_MULTI_DIM_COLUMN_MAJOR",
    "TAG_SELF_DESCRIBE",
    "TYP",
    "TYPED_ARRAY_DTYPES",
    "DectrisEnd",
    "DectrisImage",
    "DectrisMessage",
    "DectrisPacket",
    "DectrisStart",
    "DectrisStream2Framer",
    "build_end",
    "build_image",
    "build_start",
    "decode_message",
    "encode_array",
    "parse",
    "peek",
    "rational_seconds",
]
