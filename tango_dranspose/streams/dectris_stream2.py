"""Dectris stream v2 (SIMPLON 1.8+, format ``cbor``), typ ``DECTRIS_STREAM2``.

Each upstream ZMQ message is one frame holding one CBOR map (RFC 8949), normally preceded by
the self-describe tag 55799, whose first key ``type`` is ``start``, ``image`` or ``end``:

* start: series configuration (``series_id, series_unique_id, arm_date, channels,
  number_of_images, image_size_x/y, flatfield/pixel_mask`` maps of arrays, ``user_data``, ...);
* image: ``series_id, image_id, real_time/start_time/stop_time`` (rationals ``[num, den]``
  seconds), ``data``: channel name -> image;
* end: ``series_id, series_unique_id``.

Arrays are RFC 8746 multi-dimensional arrays (tag 40 = row-major, 1040 = column-major) of a
typed array (tags 64..87: uint/sint/float, big/little endian, by bit pattern). The typed
array's byte string may be replaced by Dectris' compression tag 56500
``[algorithm, elem_size, bytes]``: ``bslz4`` (bitshuffle+LZ4, HDF5 filter framing) or ``lz4``
(LZ4, HDF5 LZ4-filter framing); :mod:`~tango_dranspose.streams.codecs` decodes both.

The framer forwards each message unchanged as one event (``[frame]`` for START, DATA and END).
It checks that the frame is exactly one well-formed CBOR item and reads ``type`` and
``series_id`` without decoding or copying the image payload; decompression happens in
:func:`parse`, in the worker. Images of another series than the running one are dropped.

The detector PUSHes round-robin: with several PULL clients only one of them receives the start
message. The runtime re-broadcasts that header to every worker; a framer only sees what its own
socket receives.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import cbor2
import numpy as np
from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData, frame_buffer
from tango_dranspose.streams import codecs
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

TYP = "DECTRIS_STREAM2"

TAG_SELF_DESCRIBE = 55799
TAG_MULTI_DIM = 40
TAG_MULTI_DIM_COLUMN_MAJOR = 1040
TAG_DECTRIS_COMPRESSION = 56500

# RFC 8746 typed arrays: tag -> numpy dtype (76 is reserved, 83/87 float128 unsupported).
TYPED_ARRAY_DTYPES: dict[int, str] = {
    64: "u1",
    65: ">u2",
    66: ">u4",
    67: ">u8",
    68: "u1",  # uint8, clamped arithmetic: the same bytes
    69: "<u2",
    70: "<u4",
    71: "<u8",
    72: "i1",
    73: ">i2",
    74: ">i4",
    75: ">i8",
    77: "<i2",
    78: "<i4",
    79: "<i8",
    80: ">f2",
    81: ">f4",
    82: ">f8",
    84: "<f2",
    85: "<f4",
    86: "<f8",
}
_TAG_FOR_DTYPE = {
    "u1": 64,
    "<u2": 69,
    "<u4": 70,
    "<u8": 71,
    "i1": 72,
    "<i2": 77,
    "<i4": 78,
    "<i8": 79,
    "<f2": 84,
    "<f4": 85,
    "<f8": 86,
}
# Dectris compression tag algorithm -> codecs name: stream v2's "lz4" uses the HDF5 framing.
_ALGORITHMS = {"bslz4": "bslz4", "lz4": "lz4-h5"}


# -- decoding --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compressed:
    """The content of tag 56500, decoded once the enclosing typed array gives the dtype."""

    algorithm: str
    elem_size: int
    data: bytes

    def decode(self, dtype: np.dtype[Any], what: str) -> np.ndarray:
        name = _ALGORITHMS.get(self.algorithm)
        if name is None:
            raise codecs.CodecUnavailable(
                f"{what}: unknown Dectris compression algorithm {self.algorithm!r}"
            )
        if name == "bslz4" and self.elem_size != dtype.itemsize:
            raise ParseError(
                f"{what}: bslz4 element size {self.elem_size} does not match {dtype} "
                f"({dtype.itemsize} bytes)"
            )
        return codecs.decompress(self.data, name, dtype, None, what)


def _compressed(value: Any) -> _Compressed:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
        or not isinstance(value[2], bytes | bytearray)
    ):
        raise ParseError("tag 56500 must hold [algorithm, elem_size, bytes]")
    return _Compressed(value[0], value[1], bytes(value[2]))


def _typed_array(tag: int, value: Any) -> np.ndarray:
    dtype_name = TYPED_ARRAY_DTYPES.get(tag)
    if dtype_name is None:
        raise codecs.CodecUnavailable(f"typed array tag {tag} is not supported")
    dtype = np.dtype(dtype_name)
    what = f"typed array (tag {tag})"
    if isinstance(value, _Compressed):
        return value.decode(dtype, what)
    if not isinstance(value, bytes | bytearray):
        raise ParseError(f"{what} must hold a byte string, got {type(value).__name__}")
    if len(value) % dtype.itemsize:
        raise ParseError(f"{what}: {len(value)} bytes is not a whole number of {dtype}")
    return np.frombuffer(value, dtype=dtype)


def _multi_dim(value: Any, column_major: bool) -> np.ndarray:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ParseError("a multi-dimensional array (tag 40) must hold [dimensions, elements]")
    dims = codecs.parse_shape(value[0], "multi-dimensional array")
    contents = value[1]
    if isinstance(contents, list | tuple):
        contents = np.array(contents)
    if not isinstance(contents, np.ndarray):
        raise ParseError("a multi-dimensional array must hold a typed array or an array")
    if contents.size != math.prod(dims):
        raise ParseError(
            f"multi-dimensional array: dimensions {list(dims)} need {math.prod(dims)} elements, "
            f"got {contents.size}"
        )
    return contents.reshape(dims, order="F" if column_major else "C")


def _tag_hook(first: Any, second: Any) -> Any:
    # cbor2 5.x calls hook(decoder, tag), 6.x calls hook(tag, immutable): accept both.
    tag = first if isinstance(first, cbor2.CBORTag) else second
    if tag.tag == TAG_DECTRIS_COMPRESSION:
        return _compressed(tag.value)
    if 64 <= tag.tag <= 87:
        return _typed_array(tag.tag, tag.value)
    if tag.tag in (TAG_MULTI_DIM, TAG_MULTI_DIM_COLUMN_MAJOR):
        return _multi_dim(tag.value, tag.tag == TAG_MULTI_DIM_COLUMN_MAJOR)
    return tag


def _thaw(value: Any) -> Any:
    """Plain dicts and lists (cbor2 6.x gives frozendicts and tuples inside tags)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, _Compressed):
        # Outside a typed array the tag stands for a plain byte string.
        dtype = np.dtype(f"u{value.elem_size}") if value.algorithm == "bslz4" else np.dtype("u1")
        return value.decode(dtype, "compressed byte string").tobytes()
    return value


def _parse_error_in(exc: BaseException) -> ParseError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ParseError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def decode_message(frame: Any) -> dict[str, Any]:
    """The CBOR map of one stream v2 frame with every array decoded (decompressed)."""
    view = _view(frame)
    _scan(view)
    try:
        value = cbor2.loads(view, tag_hook=_tag_hook)
    except ParseError:
        raise
    except Exception as exc:  # cbor2 wraps hook errors; its own errors vary across versions
        inner = _parse_error_in(exc)
        if inner is not None:
            raise inner from None
        raise ParseError(f"stream v2 message is not valid CBOR: {exc}") from None
    while isinstance(value, cbor2.CBORTag) and value.tag == TAG_SELF_DESCRIBE:
        value = value.value
    value = _thaw(value)
    if not isinstance(value, dict):
        raise ParseError(f"a stream v2 message must be a CBOR map, got {type(value).__name__}")
    return value


def _view(frame: Any) -> memoryview:
    try:
        view = frame_buffer(frame)
    except TypeError:
        raise ParseError(f"not a byte frame: {type(frame).__name__}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


# -- a copy-free structural scan, for the framer ---------------------------------------------

_MAX_DEPTH = 64
_UINT = {
    24: struct.Struct(">B"),
    25: struct.Struct(">H"),
    26: struct.Struct(">I"),
    27: struct.Struct(">Q"),
}


class _Scanner:
    """Walks CBOR item headers without materialising strings: well-formedness, top-level keys."""

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def head(self, pos: int) -> tuple[int, int, int | None, int]:
        """(major type, additional info, argument or None if indefinite, position after)."""
        if pos >= len(self.view):
            raise ParseError(f"truncated CBOR: item expected at byte {pos}")
        byte = self.view[pos]
        major, info = byte >> 5, byte & 0x1F
        pos += 1
        if info < 24:
            return major, info, info, pos
        if info in _UINT:
            fmt = _UINT[info]
            if pos + fmt.size > len(self.view):
                raise ParseError(f"truncated CBOR: header at byte {pos - 1}")
            return major, info, fmt.unpack_from(self.view, pos)[0], pos + fmt.size
        if info == 31 and major in (2, 3, 4, 5, 7):
            return major, info, None, pos
        raise ParseError(f"invalid CBOR header byte 0x{byte:02x} at {pos - 1}")

    def skip(self, pos: int, depth: int = 0) -> int:
        if depth > _MAX_DEPTH:
            raise ParseError("CBOR nested too deeply")
        start = pos
        major, _, arg, pos = self.head(pos)
        if major in (0, 1):
            return pos
        if major in (2, 3):
            if arg is not None:
                return self._bytes_end(pos, arg)
            while not self.at_break(pos):
                chunk_major, _, chunk_len, pos = self.head(pos)
                if chunk_major != major or chunk_len is None:
                    raise ParseError(f"invalid chunk in indefinite string at byte {start}")
                pos = self._bytes_end(pos, chunk_len)
            return pos + 1
        if major in (4, 5):
            per = 2 if major == 5 else 1
            if arg is None:
                while not self.at_break(pos):
                    for _ in range(per):
                        pos = self.skip(pos, depth + 1)
                return pos + 1
            for _ in range(arg * per):
                pos = self.skip(pos, depth + 1)
            return pos
        if major == 6:
            return self.skip(pos, depth + 1)
        if arg is None:  # 0xff outside an indefinite container
            raise ParseError(f"unexpected CBOR break at byte {start}")
        return pos

    def _bytes_end(self, pos: int, length: int) -> int:
        if pos + length > len(self.view):
            raise ParseError(
                f"truncated CBOR: a string of {length} bytes at byte {pos} passes the end "
                f"({len(self.view)} bytes)"
            )
        return pos + length

    def at_break(self, pos: int) -> bool:
        if pos >= len(self.view):
            raise ParseError("truncated CBOR: indefinite item not terminated")
        return self.view[pos] == 0xFF

    def scalar(self, pos: int) -> Any:
        """A text string or unsigned int at ``pos`` (tags skipped), else None."""
        major, _, arg, pos = self.head(pos)
        while major == 6:
            major, _, arg, pos = self.head(pos)
        if major == 0:
            return arg
        if major == 3 and arg is not None and pos + arg <= len(self.view):
            try:
                return bytes(self.view[pos : pos + arg]).decode()
            except UnicodeDecodeError:
                return None
        return None


_PEEKED = ("type", "series_id", "image_id")


def _scan(view: memoryview) -> dict[str, Any]:
    """Check ``view`` is one well-formed CBOR map; return its type, series_id and image_id."""
    scanner = _Scanner(view)
    pos = 0
    major, _, arg, after = scanner.head(pos)
    while major == 6:  # the self-describe tag (or any other wrapping tag)
        pos = after
        major, _, arg, after = scanner.head(pos)
    if major != 5:
        raise ParseError("a stream v2 message must be a CBOR map")
    found: dict[str, Any] = {}
    pos = after
    count = 0
    while (arg is None and not scanner.at_break(pos)) or (arg is not None and count < arg):
        key = scanner.scalar(pos)
        pos = scanner.skip(pos)
        if key in _PEEKED:
            found[key] = scanner.scalar(pos)
        pos = scanner.skip(pos)
        count += 1
    if arg is None:
        pos += 1
    if pos != len(view):
        raise ParseError(f"{len(view) - pos} bytes after the end of the CBOR message")
    return found


def peek(frame: Any) -> dict[str, Any]:
    """``type`` (and ``series_id``, ``image_id`` when present) of a frame, without decoding it."""
    return _scan(_view(frame))


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


def encode_array(array: np.ndarray, compression: str = "none") -> cbor2.CBORTag:
    """``array`` as an RFC 8746 row-major multi-dimensional typed array, optionally compressed
    with Dectris' tag 56500 (``bslz4`` or ``lz4``)."""
    data = np.ascontiguousarray(array)
    if data.dtype.itemsize > 1 and data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    key = data.dtype.str if data.dtype.itemsize > 1 else data.dtype.str[1:]
    tag = _TAG_FOR_DTYPE.get(key)
    if tag is None:
        raise ValueError(f"no stream v2 typed array for dtype {data.dtype}")
    name = codecs.normalize(compression)
    payload: Any
    if name == "none":
        payload = data.tobytes()
    elif name == "bslz4":
        payload = cbor2.CBORTag(
            TAG_DECTRIS_COMPRESSION, ["bslz4", data.itemsize, codecs.compress(data, "bslz4")]
        )
    elif name in ("lz4", "lz4-h5"):
        payload = cbor2.CBORTag(
            TAG_DECTRIS_COMPRESSION, ["lz4", 0, codecs.compress(data, "lz4-h5")]
        )
    else:
        raise ValueError(f"stream v2 has no {compression!r} compression")
    return cbor2.CBORTag(TAG_MULTI_DIM, [list(data.shape), cbor2.CBORTag(tag, payload)])


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
