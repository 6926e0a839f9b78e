"""The CBOR layer of Dectris stream v2: typed arrays, compression, a copy-free scan.

Arrays are RFC 8746 multi-dimensional arrays (tag 40 = row-major, 1040 = column-major) of a
typed array (tags 64..87: uint/sint/float, big/little endian, by bit pattern). The typed
array's byte string may be replaced by Dectris' compression tag 56500
``[algorithm, elem_size, bytes]``: ``bslz4`` (bitshuffle+LZ4, HDF5 filter framing) or ``lz4``
(LZ4, HDF5 LZ4-filter framing); :mod:`~tango_dranspose.streams.codecs` decodes both.

:func:`decode_message` decodes (and decompresses) a whole frame, for ``parse`` in the worker;
:func:`peek` only walks the CBOR item headers to check the frame is one well-formed map and
read ``type``, ``series_id`` and ``image_id``, for the framer, which must not copy images.
:func:`encode_array` is the inverse of the array decoding, for simulators and tests.

No knowledge of the start / image / end messages lives here: that is
:mod:`~tango_dranspose.streams.dectris_stream2`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from tango_dranspose.core.events import frame_buffer
from tango_dranspose.streams import codecs
from tango_dranspose.streams.base import ParseError

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
_SHARING_TAGS = frozenset({28, 29})
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
        start = pos
        byte = self.view[pos]
        major, info = byte >> 5, byte & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info in _UINT:
            fmt = _UINT[info]
            if pos + fmt.size > len(self.view):
                raise ParseError(f"truncated CBOR: header at byte {start}")
            arg, pos = fmt.unpack_from(self.view, pos)[0], pos + fmt.size
        else:
            arg = -1
        if arg >= 0:
            if major == 6 and arg in _SHARING_TAGS:
                # cbor2 resolves shared values into one object referenced many times: 40
                # levels of pairs make 2**40 paths for whoever walks the decoded message,
                # or a cycle. Detectors never share values.
                raise ParseError(f"CBOR value sharing (tag {arg}) at byte {start} is refused")
            return major, info, arg, pos
        if info == 31 and major in (2, 3, 4, 5, 7):
            return major, info, None, pos
        raise ParseError(f"invalid CBOR header byte 0x{byte:02x} at {start}")

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


# -- encoding (simulators and tests) --------------------------------------------------------


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


__all__ = [
    "TAG_DECTRIS_COMPRESSION",
    "TAG_MULTI_DIM",
    "TAG_MULTI_DIM_COLUMN_MAJOR",
    "TAG_SELF_DESCRIBE",
    "TYPED_ARRAY_DTYPES",
    "decode_message",
    "encode_array",
    "peek",
]
