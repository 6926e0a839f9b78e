"""Dectris Eiger stream v1 ("legacy", SIMPLON stream format ``legacy``), typ ``EIGER_LEGACY``.

Upstream messages (ZMQ PULL, multipart, JSON parts plus binary blobs):

* header ``dheader-1.0``; its parts depend on ``header_detail``:
  ``none`` = 1 part, ``basic`` = 2 (+ the detector configuration JSON),
  ``all`` = 8 (+ flatfield, pixel mask and count-rate table, each a JSON part and a blob);
  a header appendix, when configured, is one more JSON part at the end (so ``all`` = 9);
* image, 5 parts: ``dimage-1.0`` (frame, hash, series), ``dimage_d-1.0`` (encoding, shape, type,
  size), the blob, ``dconfig-1.0`` (start/stop/real time in ns), the image appendix
  (4 parts when no appendix is sent);
* end ``dseries_end-1.0``.

Shapes in Dectris v1 list the fastest-varying dimension first (``[x, y]`` = ``[width, height]``;
the count-rate table ``[2, 1001]`` holds 1001 pairs), so numpy arrays have the reversed shape.

The framer forwards each message unchanged as one event: START = all header parts, DATA = the
4 or 5 image parts, END = ``[json]``. It checks the structure (part count, JSON parts, htypes,
sizes of uncompressed blobs) but does not decompress: a compressed blob is only checked when
user code decodes it with :meth:`EigerLegacyImage.array`, which raises :class:`ParseError` for
a truncated or corrupt blob (the blobs of the ``eiger-small`` sample capture are truncated).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData, frame_buffer
from tango_dranspose.streams import codecs
from tango_dranspose.streams.base import (
    JsonHeadFramer,
    Kind,
    MessageModel,
    ParseError,
    Protocol,
    decode_json,
    expect_frames,
    expect_typ,
    first_json,
    load_json,
    validate,
)

TYP = "EIGER_LEGACY"

# Header parts before the optional appendix, by header_detail.
HEADER_PARTS = {"all": 8, "basic": 2, "none": 1}


def _numpy_shape(shape: Any, what: str = "Eiger array") -> tuple[int, ...]:
    return tuple(reversed(codecs.parse_shape(shape, what)))


class EigerLegacyArray(MessageModel):
    """A header array (flatfield, pixel mask, count-rate table): its JSON part and its blob."""

    htype: str
    shape: list[int]
    type: str
    buffer: Any = None

    def array(self) -> np.ndarray:
        """The array, numpy-shaped (reversed Dectris shape), viewing the blob without a copy."""
        shape = _numpy_shape(self.shape, self.htype)
        return codecs.as_array(self.buffer, self.type, shape, self.htype)


class EigerLegacyHeader(MessageModel):
    htype: Literal["dheader-1.0"]
    header_detail: str
    series: int | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    """The detector configuration (``nimages, ntrigger, compression, bit_depth_image, ...``)."""
    appendix: Any = None
    flatfield: EigerLegacyArray | None = None
    pixel_mask: EigerLegacyArray | None = None
    countrate_table: EigerLegacyArray | None = None


class EigerLegacyImage(MessageModel):
    htype: Literal["dimage-1.0"]
    frame: int
    hash: str = ""
    series: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    """``dimage_d-1.0``: ``encoding, shape ([x, y]), type, size`` plus the blob as ``buffer``."""
    config: dict[str, Any] = Field(default_factory=dict)
    """``dconfig-1.0``: ``start_time, stop_time, real_time`` in ns."""
    appendix: Any = None

    def array(self) -> np.ndarray:
        """The decoded image (numpy shape ``(y, x)``); :class:`ParseError` for a bad blob.

        ``lz4<`` and ``bs*-lz4<`` need the optional codec packages (``codecs`` extra).
        """
        what = f"Eiger image {self.frame}"
        encoding = self.data.get("encoding")
        if not isinstance(encoding, str):
            raise ParseError(f"{what}: no encoding in its dimage_d part")
        return codecs.decompress(
            self.data.get("buffer"),
            encoding,
            self.data.get("type"),
            _numpy_shape(self.data.get("shape"), what),
            what,
        )


class EigerLegacyEnd(MessageModel):
    htype: Literal["dseries_end-1.0"]
    series: int | None = None


EigerLegacyMessage = EigerLegacyHeader | EigerLegacyImage | EigerLegacyEnd
EigerLegacyPacket: TypeAdapter[EigerLegacyMessage] = TypeAdapter(
    Annotated[EigerLegacyMessage, Field(discriminator="htype")]
)
"""Validates the first JSON part of a message into the matching model (dranspose's name)."""


def _any_json(frame: Any, what: str) -> Any:
    try:
        raw = bytes(frame_buffer(frame))
    except TypeError as exc:
        raise ParseError(f"{what}: {exc}") from None
    # An appendix is free-form user data; an empty part means none was configured.
    return decode_json(raw, what) if raw.strip() else None


def _part(frame: Any, htype: str, what: str) -> dict[str, Any]:
    value = load_json(frame, what)
    if value.get("htype") != htype:
        raise ParseError(f"{what} must have htype {htype!r}, got {value.get('htype')!r}")
    return value


def _header_array(frames: Sequence[Any], index: int, htype: str) -> EigerLegacyArray:
    head = _part(frames[index], htype, f"Eiger header part {index + 1}")
    array = validate(EigerLegacyArray, head, f"Eiger {htype}")
    array.buffer = frames[index + 1]
    return array


def _parse_header(packet: EigerLegacyHeader, frames: Sequence[Any]) -> None:
    base = HEADER_PARTS.get(packet.header_detail)
    if base is None:
        raise ParseError(f"unknown Eiger header_detail {packet.header_detail!r}")
    if len(frames) not in (base, base + 1):
        raise ParseError(
            f"an Eiger header with header_detail {packet.header_detail!r} has {base} parts "
            f"(+1 appendix), got {len(frames)}"
        )
    if base >= 2:
        packet.info = load_json(frames[1], "Eiger detector configuration")
    if base == 8:
        packet.flatfield = _header_array(frames, 2, "dflatfield-1.0")
        packet.pixel_mask = _header_array(frames, 4, "dpixelmask-1.0")
        packet.countrate_table = _header_array(frames, 6, "dcountrate_table-1.0")
    if len(frames) == base + 1:
        packet.appendix = _any_json(frames[base], "Eiger header appendix")


def _parse_image(packet: EigerLegacyImage, frames: Sequence[Any]) -> None:
    if len(frames) not in (4, 5):
        raise ParseError(f"an Eiger image has 5 parts (4 without appendix), got {len(frames)}")
    what = f"Eiger image {packet.frame}"
    info = _part(frames[1], "dimage_d-1.0", f"{what} part 2")
    for key in ("encoding", "shape", "type"):
        if key not in info:
            raise ParseError(f"{what}: dimage_d part has no {key!r}")
    if not isinstance(info["encoding"], str):
        raise ParseError(f"{what}: encoding must be a string, got {info['encoding']!r}")
    dtype = codecs.parse_dtype(info["type"], what)
    shape = _numpy_shape(info["shape"], what)
    if codecs.is_uncompressed(info["encoding"]):
        # Cheap to check now; compressed blobs are checked when decoded.
        codecs.as_array(frames[2], dtype, shape, what)
    info["buffer"] = frames[2]
    packet.data = info
    packet.config = _part(frames[3], "dconfig-1.0", f"{what} part 4")
    if len(frames) == 5:
        packet.appendix = _any_json(frames[4], f"{what} appendix")


def parse(data: StreamData) -> EigerLegacyMessage:
    """One Eiger v1 event as its model; :class:`ParseError` when the structure is invalid."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "an Eiger message")
    head = load_json(data.frames[0], "Eiger message")
    packet = validate(EigerLegacyPacket, head, f"Eiger {head.get('htype')!r} message")
    if isinstance(packet, EigerLegacyHeader):
        _parse_header(packet, data.frames)
    elif isinstance(packet, EigerLegacyImage):
        _parse_image(packet, data.frames)
    elif data.length != 1:
        raise ParseError(f"an Eiger series end has 1 part, got {data.length}")
    return packet


_KINDS = {"dheader-1.0": Kind.START, "dimage-1.0": Kind.DATA, "dseries_end-1.0": Kind.END}


class EigerLegacyFramer(JsonHeadFramer):
    """One event per Eiger v1 message, after checking its structure with :func:`parse`."""

    typ = TYP
    kinds = _KINDS
    what = "Eiger message"

    def check(self, kind: Kind, head: dict[str, Any], message: Sequence[Any]) -> None:
        parse(StreamData(TYP, list(message)))

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        return first_json(message).get("htype") == "dheader-1.0"


# -- building messages (simulators and tests) -----------------------------------------------


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


_EMPTY: Any = object()  # the default image appendix, sent as ``{}`` like the detector does


def _array_parts(htype: str, array: np.ndarray) -> list[bytes]:
    head = {"htype": htype, "shape": list(reversed(array.shape)), "type": array.dtype.name}
    return [_json(head), np.ascontiguousarray(array).tobytes()]


def build_header(
    config: dict[str, Any],
    series: int = 1,
    header_detail: str = "basic",
    appendix: Any = None,
    flatfield: np.ndarray | None = None,
    pixel_mask: np.ndarray | None = None,
    countrate_table: np.ndarray | None = None,
) -> list[bytes]:
    """A ``dheader-1.0`` message; ``all`` fills missing arrays from the config's detector size."""
    if header_detail not in HEADER_PARTS:
        raise ValueError(f"header_detail must be one of {sorted(HEADER_PARTS)}")
    parts = [_json({"htype": "dheader-1.0", "header_detail": header_detail, "series": series})]
    if header_detail != "none":
        parts.append(_json(config))
    if header_detail == "all":
        size = (config.get("y_pixels_in_detector", 1), config.get("x_pixels_in_detector", 1))
        if flatfield is None:
            flatfield = np.ones(size, dtype=np.float32)
        if pixel_mask is None:
            pixel_mask = np.zeros(size, dtype=np.uint32)
        if countrate_table is None:
            countrate_table = np.zeros((1001, 2), dtype=np.float32)
        parts += _array_parts("dflatfield-1.0", flatfield)
        parts += _array_parts("dpixelmask-1.0", pixel_mask)
        parts += _array_parts("dcountrate_table-1.0", countrate_table)
    if appendix is not None:
        parts.append(_json(appendix))
    return parts


def encoding_for(compression: str, dtype: np.dtype[Any]) -> str:
    """The Dectris v1 encoding string for ``none``/``lz4``/``bslz4`` and an image dtype."""
    name = codecs.normalize(compression)
    if name == "none":
        return "<"
    if name == "lz4":
        return "lz4<"
    if name == "bslz4":
        return f"bs{dtype.itemsize * 8}-lz4<"
    raise ValueError(f"Eiger stream v1 has no {compression!r} encoding")


def build_image(
    image: np.ndarray,
    frame: int,
    series: int = 1,
    compression: str = "bslz4",
    start_time: int = 0,
    real_time: int = 10_000_000,
    appendix: Any = _EMPTY,
) -> list[bytes]:
    """A ``dimage-1.0`` message of a 2-D ``image``; ``appendix=None`` omits the 5th part."""
    encoding = encoding_for(compression, image.dtype)
    blob = codecs.compress(image, encoding)
    parts = [
        _json(
            {
                "htype": "dimage-1.0",
                "frame": frame,
                "hash": hashlib.md5(blob, usedforsecurity=False).hexdigest(),
                "series": series,
            }
        ),
        _json(
            {
                "htype": "dimage_d-1.0",
                "encoding": encoding,
                "shape": list(reversed(image.shape)),
                "size": len(blob),
                "type": image.dtype.name,
            }
        ),
        blob,
        _json(
            {
                "htype": "dconfig-1.0",
                "start_time": start_time,
                "stop_time": start_time + real_time,
                "real_time": real_time,
            }
        ),
    ]
    if appendix is not None:
        parts.append(_json({} if appendix is _EMPTY else appendix))
    return parts


def build_end(series: int = 1) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": series})]


PROTOCOL = Protocol(
    typ=TYP,
    framer=EigerLegacyFramer,
    parse=parse,
    description="Dectris Eiger stream v1 (legacy): dheader / dimage / dseries_end multipart JSON",
)

__all__ = [
    "HEADER_PARTS",
    "PROTOCOL",
    "TYP",
    "EigerLegacyArray",
    "EigerLegacyEnd",
    "EigerLegacyFramer",
    "EigerLegacyHeader",
    "EigerLegacyImage",
    "EigerLegacyMessage",
    "EigerLegacyPacket",
    "build_end",
    "build_header",
    "build_image",
    "encoding_for",
    "parse",
]
