"""Turning detector image buffers into numpy arrays: raw, bitshuffle+LZ4 and LZ4.

Compressed formats, by the names upstream messages use:

* ``bslz4`` (also Dectris v1 ``bs8-lz4<``, ``bs16-lz4<``, ``bs32-lz4<``): bitshuffle + LZ4 in the
  framing of the bitshuffle HDF5 filter: a 12-byte header (uint64 BE uncompressed bytes, uint32
  BE block size in bytes), then per block a uint32 BE compressed size and the LZ4 block; the
  last ``n % 8`` elements follow uncompressed.
* ``lz4`` (Dectris v1 ``lz4<``): one raw LZ4 block without any header.
* ``lz4-h5`` (Dectris stream v2's ``lz4``): LZ4 in the framing of the HDF5 LZ4 filter: the same
  12-byte header, then per block a uint32 BE compressed size and the block (stored as is when
  that size equals the block's uncompressed size).

Decompression needs the optional packages ``lz4`` (and ``bitshuffle`` for ``bslz4``); without
them :class:`CodecUnavailable` says which extra to install. LZ4 blocks are always decoded with
the bounds-checked decoder of the ``lz4`` package, block by block, and only then unshuffled:
bitshuffle's own one-call decoder is given no input length, so a truncated or hostile blob could
make it read past the buffer. A bad blob therefore gives a :class:`ParseError`, never a crash.
"""

from __future__ import annotations

import importlib
import math
import struct
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from tango_dranspose.core.events import frame_buffer
from tango_dranspose.streams.base import ParseError

EXTRA_HINT = "pip install tango-dranspose[codecs]"

# bitshuffle's defaults: blocks of about 8 KiB, a multiple of 8 elements.
_TARGET_BLOCK_BYTES = 8192
_MIN_BLOCK_ELEMENTS = 128
_H5_HEADER = struct.Struct(">QI")
_BLOCK_SIZE = struct.Struct(">I")
# LZ4 spends at least one byte per 255 bytes of output: a buffer that claims more than that
# (a 12-byte header saying 2**40) is refused before its output is allocated.
MAX_LZ4_RATIO = 256
_RATIO_SLACK = 4096

_ALIASES = {
    "": "none",
    "none": "none",
    "<": "none",
    "raw": "none",
    "bslz4": "bslz4",
    "bslz4-h5": "bslz4",
    "bs8-lz4<": "bslz4",
    "bs16-lz4<": "bslz4",
    "bs32-lz4<": "bslz4",
    "bs64-lz4<": "bslz4",
    "lz4": "lz4",
    "lz4<": "lz4",
    "lz4-h5": "lz4-h5",
}


class CodecUnavailable(ParseError):
    """The buffer may be fine, but this installation cannot decode it (library or algorithm)."""


def _alias(compression: object) -> str | None:
    if compression is None:
        return "none"
    # Upstream JSON can put anything here (a number, a list): only text names a codec.
    return _ALIASES.get(compression.strip().lower()) if isinstance(compression, str) else None


def normalize(compression: str | None) -> str:
    """The canonical name (``none``, ``bslz4``, ``lz4``, ``lz4-h5``) of a compression tag."""
    name = _alias(compression)
    if name is None:
        raise CodecUnavailable(
            f"unknown compression {compression!r}; known: {', '.join(sorted(set(_ALIASES)))}"
        )
    return name


def is_uncompressed(compression: str | None) -> bool:
    """Whether ``compression`` names plain, uncompressed data (``none``, ``<``, empty)."""
    return _alias(compression) == "none"


def _module(name: str, compression: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CodecUnavailable(
            f"{compression} decompression needs the optional package {name.split('.')[0]!r} "
            f"({EXTRA_HINT})"
        ) from None


def available(compression: str) -> bool:
    """Whether this installation can decode ``compression``."""
    try:
        name = normalize(compression)
        if name in ("bslz4", "lz4", "lz4-h5"):
            _module("lz4.block", name)
        if name == "bslz4":
            _module("bitshuffle", name)
    except CodecUnavailable:
        return False
    return True


def parse_dtype(name: Any, what: str = "array") -> np.dtype[Any]:
    """A numeric numpy dtype from an upstream type name, or :class:`ParseError`."""
    if not isinstance(name, str) or not name:
        raise ParseError(f"{what}: type must be a numpy dtype name, got {name!r}")
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError, OverflowError):
        # numpy parses "f8,i4", "(2,)u1" and worse: each malformed one fails its own way.
        raise ParseError(f"{what}: {name!r} is not a numpy dtype") from None
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise ParseError(f"{what}: {name!r} is not a numeric dtype")
    return dtype


MAX_DIMS = 32
"""numpy 1 allows 32 dimensions (numpy 2, 64); no detector sends more than 3."""
MAX_ELEMENTS = 1 << 48
"""Far beyond any detector frame, below what numpy's intp can index."""


def parse_shape(shape: Any, what: str = "array") -> tuple[int, ...]:
    """A shape from an upstream list of non-negative ints, or :class:`ParseError`."""
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > MAX_DIMS
        or not all(
            isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 0 for n in shape
        )
    ):
        raise ParseError(
            f"{what}: shape must be a list of at most {MAX_DIMS} non-negative ints, "
            f"got {_short(shape)}"
        )
    dims = tuple(int(n) for n in shape)
    # Dimensions of zero make any product zero, yet numpy still refuses huge ones.
    if math.prod(n for n in dims if n) > MAX_ELEMENTS:
        raise ParseError(f"{what}: shape {list(dims)} has more than 2**48 elements")
    return dims


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_array(buffer: Any, dtype: Any, shape: Sequence[int], what: str = "array") -> np.ndarray:
    """The uncompressed ``buffer`` viewed (no copy) as ``dtype`` of ``shape``; checks the size."""
    dt = dtype if isinstance(dtype, np.dtype) else parse_dtype(dtype, what)
    dims = parse_shape(shape, what)
    view = _view(buffer, what)
    expected = math.prod(dims) * dt.itemsize
    if len(view) != expected:
        raise ParseError(
            f"{what}: shape {list(dims)} of {dt} needs {expected} bytes, the buffer has {len(view)}"
        )
    return np.frombuffer(view, dtype=dt).reshape(dims)


def _view(buffer: Any, what: str) -> memoryview:
    try:
        view = frame_buffer(buffer)
    except TypeError:
        raise ParseError(f"{what}: not a byte buffer ({type(buffer).__name__})") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def decompress(
    buffer: Any,
    compression: str | None,
    dtype: Any,
    shape: Sequence[int] | None = None,
    what: str = "image",
) -> np.ndarray:
    """Decode ``buffer`` into an array of ``dtype`` and ``shape``.

    ``shape=None`` gives a flat array whose length the buffer's own header states (``none``,
    ``bslz4``, ``lz4-h5``; a raw ``lz4`` block needs the shape). Uncompressed buffers are
    viewed without a copy.
    """
    name = normalize(compression)
    dt = dtype if isinstance(dtype, np.dtype) else parse_dtype(dtype, what)
    view = _view(buffer, what)
    if name == "none":
        if shape is None:
            if len(view) % dt.itemsize:
                raise ParseError(f"{what}: {len(view)} bytes is not a whole number of {dt}")
            return np.frombuffer(view, dtype=dt)
        return as_array(view, dt, shape, what)
    dims = parse_shape(shape, what) if shape is not None else None
    if name == "bslz4":
        flat = _bslz4(view, dt, dims, what)
    elif name == "lz4-h5":
        flat = np.frombuffer(_lz4_h5(view, dt, dims, what), dtype=dt)
    else:
        if dims is None:
            raise ParseError(f"{what}: a raw lz4 block needs the shape to be known")
        flat = np.frombuffer(_lz4_block(view, math.prod(dims) * dt.itemsize, what), dtype=dt)
    return flat.reshape(dims) if dims is not None else flat


def _expected_bytes(total: int, dt: np.dtype[Any], dims: tuple[int, ...] | None, what: str) -> int:
    if dims is not None:
        expected = math.prod(dims) * dt.itemsize
        if total != expected:
            raise ParseError(
                f"{what}: the compressed header says {total} bytes, "
                f"shape {list(dims)} of {dt} needs {expected}"
            )
    if total % dt.itemsize:
        raise ParseError(f"{what}: {total} uncompressed bytes is not a whole number of {dt}")
    return total


def _header(view: memoryview, what: str) -> tuple[int, int]:
    if len(view) < _H5_HEADER.size:
        raise ParseError(f"{what}: compressed buffer of {len(view)} bytes has no 12-byte header")
    total, block_bytes = _H5_HEADER.unpack_from(view, 0)
    return int(total), int(block_bytes)


def _next_block(view: memoryview, pos: int, index: int, what: str) -> tuple[memoryview, int]:
    """The compressed bytes of block ``index`` at ``pos`` and the position after them."""
    if pos + _BLOCK_SIZE.size > len(view):
        raise ParseError(
            f"{what}: truncated: block {index} starts at byte {pos}, the buffer has {len(view)}"
        )
    (size,) = _BLOCK_SIZE.unpack_from(view, pos)
    start = pos + _BLOCK_SIZE.size
    if start + size > len(view):
        raise ParseError(
            f"{what}: truncated: block {index} needs {size} bytes at byte {start}, "
            f"the buffer has {len(view)}"
        )
    return view[start : start + size], start + size


def _check_ratio(nbytes: int, compressed: int, what: str) -> None:
    if nbytes > MAX_LZ4_RATIO * compressed + _RATIO_SLACK:
        raise ParseError(
            f"{what}: truncated or corrupt: {compressed} compressed bytes cannot hold the "
            f"{nbytes} bytes declared (lz4 expands at most {MAX_LZ4_RATIO}-fold)"
        )


def _lz4_block(chunk: memoryview, nbytes: int, what: str) -> bytes:
    block = _module("lz4.block", "lz4")
    _check_ratio(nbytes, len(chunk), what)
    try:
        out: bytes = block.decompress(chunk, uncompressed_size=nbytes)
    except (block.LZ4BlockError, ValueError) as exc:
        raise ParseError(f"{what}: corrupt lz4 data: {exc}") from None
    if len(out) != nbytes:
        raise ParseError(f"{what}: lz4 data decodes to {len(out)} bytes, expected {nbytes}")
    return out


def _bslz4(
    view: memoryview, dt: np.dtype[Any], dims: tuple[int, ...] | None, what: str
) -> np.ndarray:
    bitshuffle = _module("bitshuffle", "bslz4")
    _module("lz4.block", "bslz4")
    total, block_bytes = _header(view, what)
    total = _expected_bytes(total, dt, dims, what)
    _check_ratio(total, len(view), what)
    itemsize = dt.itemsize
    if block_bytes <= 0 or block_bytes % itemsize or (block_bytes // itemsize) % 8:
        raise ParseError(f"{what}: invalid bitshuffle block size of {block_bytes} bytes")
    block = block_bytes // itemsize
    count = total // itemsize
    full, rest = divmod(count, block)
    sizes = [block] * full + ([rest - rest % 8] if rest >= 8 else [])
    out = bytearray(total)
    pos, written = _H5_HEADER.size, 0
    for index, elements in enumerate(sizes):
        chunk, pos = _next_block(view, pos, index, what)
        nbytes = elements * itemsize
        out[written : written + nbytes] = _lz4_block(chunk, nbytes, what)
        written += nbytes
    tail = total - written
    if len(view) - pos != tail:
        raise ParseError(
            f"{what}: bslz4 buffer has {len(view) - pos} bytes after its blocks, expected {tail}"
            + (" (truncated)" if len(view) - pos < tail else "")
        )
    out[written:] = view[pos:]
    shuffled = np.frombuffer(out, dtype=dt)
    try:
        return np.asarray(bitshuffle.bitunshuffle(shuffled, block))
    except (ValueError, RuntimeError) as exc:
        raise ParseError(f"{what}: bitshuffle cannot unshuffle it: {exc}") from None


def _lz4_h5(
    view: memoryview, dt: np.dtype[Any], dims: tuple[int, ...] | None, what: str
) -> bytearray:
    _module("lz4.block", "lz4")
    total, block_bytes = _header(view, what)
    total = _expected_bytes(total, dt, dims, what)
    _check_ratio(total, len(view), what)
    if block_bytes <= 0:
        raise ParseError(f"{what}: invalid lz4 block size of {block_bytes} bytes")
    out = bytearray(total)
    pos, written, index = _H5_HEADER.size, 0, 0
    while written < total:
        nbytes = min(block_bytes, total - written)
        chunk, pos = _next_block(view, pos, index, what)
        # The HDF5 LZ4 filter stores a block as is when compressing would not shrink it.
        out[written : written + nbytes] = (
            chunk if len(chunk) == nbytes else _lz4_block(chunk, nbytes, what)
        )
        written += nbytes
        index += 1
    if pos != len(view):
        raise ParseError(f"{what}: {len(view) - pos} unexpected bytes after the last lz4 block")
    return out


# -- producing compressed buffers (simulators and tests) ------------------------------------


def default_block_size(itemsize: int) -> int:
    """bitshuffle's default block size in elements for ``itemsize``-byte elements."""
    return max(_MIN_BLOCK_ELEMENTS, (_TARGET_BLOCK_BYTES // itemsize) // 8 * 8)


def compress(array: np.ndarray, compression: str | None, block_size: int = 0) -> bytes:
    """Encode ``array`` as ``compression`` would arrive from a detector.

    ``block_size`` is in elements for ``bslz4`` and in bytes for ``lz4-h5``; 0 = the default.
    """
    name = normalize(compression)
    data = np.ascontiguousarray(array)
    if name == "none":
        return data.tobytes()
    block = _module("lz4.block", name)
    if name == "lz4":
        return bytes(block.compress(data.tobytes(), store_size=False))
    if name == "lz4-h5":
        return _compress_lz4_h5(block, data.tobytes(), block_size or 1 << 20)
    bitshuffle = _module("bitshuffle", name)
    elements = block_size or default_block_size(data.itemsize)
    if elements % 8:
        raise ValueError("a bitshuffle block size must be a multiple of 8 elements")
    body = np.asarray(bitshuffle.compress_lz4(data.reshape(-1), elements)).tobytes()
    return _H5_HEADER.pack(data.nbytes, elements * data.itemsize) + body


def _compress_lz4_h5(block: ModuleType, raw: bytes, block_bytes: int) -> bytes:
    parts = [_H5_HEADER.pack(len(raw), block_bytes)]
    for start in range(0, len(raw), block_bytes):
        piece = raw[start : start + block_bytes]
        packed = bytes(block.compress(piece, store_size=False))
        if len(packed) >= len(piece):
            packed = piece
        parts += [_BLOCK_SIZE.pack(len(packed)), packed]
    return b"".join(parts)


__all__ = [
    "EXTRA_HINT",
    "CodecUnavailable",
    "as_array",
    "available",
    "compress",
    "decompress",
    "default_block_size",
    "is_uncompressed",
    "normalize",
    "parse_dtype",
    "parse_shape",
]
