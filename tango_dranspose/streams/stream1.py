"""STINS, MAX IV's streaming-receiver protocol (Andor, Orca, Pilatus, Eiger), typ ``STINS``.

Upstream messages (ZMQ PULL, multipart):

* header: JSON ``{"htype": "header", "filename", "msg_number", ...}`` (``filename == ""`` means
  live view, nothing is saved), optionally followed by one more JSON frame of detector meta data;
* image: JSON ``{"htype": "image", "frame", "shape", "type", "compression", "msg_number", ...}``
  (extras such as ``timestamps`` are kept) and the pixel buffer;
* end: JSON ``{"htype": "series_end", "msg_number"}``.

The framer forwards each message unchanged as one event: START = the header's 1 or 2 frames,
DATA = ``[json, buffer]``, END = ``[json]``. ``parse`` gives :class:`Stream1Data.data` as an
array viewing the buffer (no copy) when ``compression == "none"``; other compressions are
decoded through :mod:`~tango_dranspose.streams.codecs` when the codec library is installed, and
otherwise ``data`` stays ``None`` and user code finds the undecoded frame in ``buffer``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import codecs
from tango_dranspose.streams.base import (
    JsonHeadFramer,
    Kind,
    MessageModel,
    ParseError,
    Protocol,
    expect_frames,
    expect_typ,
    first_json,
    load_json,
    validate,
)

TYP = "STINS"


class Stream1Start(MessageModel):
    htype: Literal["header"]
    filename: str
    msg_number: int
    meta: dict[str, Any] | None = None
    """The optional second JSON frame of the header (e.g. an Orca's ``expected_data``)."""


class Stream1Data(MessageModel):
    htype: Literal["image"]
    frame: int
    shape: list[int]
    type: str
    compression: str = "none"
    msg_number: int
    data: np.ndarray | None = None
    """The image; ``None`` only when its compression cannot be decoded here."""
    buffer: Any = None
    """The image frame as received (a zero-copy view), decoded or not."""


class Stream1End(MessageModel):
    htype: Literal["series_end"]
    msg_number: int


Stream1Message = Stream1Start | Stream1Data | Stream1End
Stream1Packet: TypeAdapter[Stream1Message] = TypeAdapter(
    Annotated[Stream1Message, Field(discriminator="htype")]
)
"""Validates a decoded STINS JSON header into the matching model (dranspose's name)."""


def _validate(head: dict[str, Any]) -> Stream1Message:
    return validate(Stream1Packet, head, f"STINS {head.get('htype')!r} message")


def _decode_image(packet: Stream1Data) -> None:
    what = f"STINS image {packet.frame}"
    if codecs.is_uncompressed(packet.compression):
        packet.data = codecs.as_array(packet.buffer, packet.type, packet.shape, what)
        return
    try:
        packet.data = codecs.decompress(
            packet.buffer, packet.compression, packet.type, packet.shape, what
        )
    except codecs.CodecUnavailable:
        packet.data = None


def parse(data: StreamData) -> Stream1Message:
    """One STINS event (header, image or end) as its model; :class:`ParseError` when invalid."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "a STINS message")
    packet = _validate(load_json(data.frames[0], "STINS message"))
    if isinstance(packet, Stream1Start):
        if data.length > 2:
            raise ParseError(f"a STINS header has 1 or 2 frames, got {data.length}")
        if data.length == 2:
            packet.meta = load_json(data.frames[1], "STINS header meta frame")
    elif isinstance(packet, Stream1Data):
        if data.length != 2:
            raise ParseError(f"a STINS image needs 2 frames, got {data.length}")
        packet.buffer = data.frames[1]
        _decode_image(packet)
    elif data.length != 1:
        raise ParseError(f"a STINS series_end has 1 frame, got {data.length}")
    return packet


_KINDS = {"header": Kind.START, "image": Kind.DATA, "series_end": Kind.END}


class Stream1Framer(JsonHeadFramer):
    """One event per STINS message, after checking it.

    Uncompressed images are checked against their JSON (dtype, shape, buffer size); compressed
    ones only for their JSON, as decompressing is the worker's job.
    """

    typ = TYP
    kinds = _KINDS
    what = "STINS message"
    not_json = "first frame is not a JSON object"

    def check(self, kind: Kind, head: dict[str, Any], message: Sequence[Any]) -> None:
        if kind is Kind.DATA:
            self._check_image(head, message)
        else:
            parse(StreamData(TYP, list(message)))

    @staticmethod
    def _check_image(head: dict[str, Any], message: Sequence[Any]) -> None:
        packet = _validate(head)
        if not isinstance(packet, Stream1Data):
            raise ParseError("not an image")
        if len(message) != 2:
            raise ParseError(f"a STINS image needs 2 frames, got {len(message)}")
        what = f"STINS image {packet.frame}"
        if codecs.is_uncompressed(packet.compression):
            codecs.as_array(message[1], packet.type, packet.shape, what)
        else:
            codecs.parse_dtype(packet.type, what)
            codecs.parse_shape(packet.shape, what)

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        head = first_json(message)
        return head.get("htype") == "header" and "msg_number" in head


# -- building messages (simulators and tests) -----------------------------------------------


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def build_header(
    filename: str = "", msg_number: int = 0, meta: dict[str, Any] | None = None, **extra: Any
) -> list[bytes]:
    """A STINS header message; ``meta`` becomes the optional second JSON frame."""
    frames = [_json({"htype": "header", "filename": filename, "msg_number": msg_number, **extra})]
    if meta is not None:
        frames.append(_json(meta))
    return frames


def build_image(
    image: np.ndarray, frame: int, msg_number: int, compression: str = "none", **extra: Any
) -> list[bytes]:
    """A STINS image message of ``image``, compressed as ``compression`` (none, bslz4, ...)."""
    head = {
        "htype": "image",
        "frame": frame,
        "shape": list(image.shape),
        "type": image.dtype.name,
        "compression": compression,
        "msg_number": msg_number,
        **extra,
    }
    return [_json(head), codecs.compress(image, compression)]


def build_end(msg_number: int) -> list[bytes]:
    return [_json({"htype": "series_end", "msg_number": msg_number})]


def diffraction_ring(
    shape: tuple[int, int] = (128, 128),
    radius: float = 40.0,
    width: float = 2.0,
    seed: int = 0,
    intensity: float = 1000.0,
    background: float = 5.0,
    dtype: str = "uint16",
) -> np.ndarray:
    """A noisy synthetic powder-diffraction image: one Gaussian ring around the centre."""
    rows, cols = np.indices(shape, dtype=float)
    r = np.hypot(rows - (shape[0] - 1) / 2, cols - (shape[1] - 1) / 2)
    mean = background + intensity * np.exp(-0.5 * ((r - radius) / width) ** 2)
    counts = np.random.default_rng(seed).poisson(mean)
    return np.clip(counts, 0, np.iinfo(dtype).max).astype(dtype)


PROTOCOL = Protocol(
    typ=TYP,
    framer=Stream1Framer,
    parse=parse,
    description="MAX IV streaming-receiver (STINS): JSON header, image + buffer, series_end",
)

__all__ = [
    "PROTOCOL",
    "TYP",
    "Stream1Data",
    "Stream1End",
    "Stream1Framer",
    "Stream1Message",
    "Stream1Packet",
    "Stream1Start",
    "build_end",
    "build_header",
    "build_image",
    "diffraction_ring",
    "parse",
]
