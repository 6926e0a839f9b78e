"""The decoder: frames back into the result, building nothing but the types it knows.

Every CBOR tag cbor2 would turn into a Python object by itself is overridden (bignums become
plain ints, the rest are refused), and tags nobody registered raise; arrays are views of the
received frames.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import cbor2
import numpy as np
from pydantic import BaseModel

from tango_dranspose.core.resultcodec._classes import ClassAllowList, resolve_class
from tango_dranspose.core.resultcodec._dtypes import dtype_from_spec, shape_from_spec
from tango_dranspose.core.resultcodec._wire import (
    FORMAT_VERSION,
    TAG_BYTEARRAY,
    TAG_COMPLEX,
    TAG_DATACLASS,
    TAG_DATE,
    TAG_DATETIME,
    TAG_DICT,
    TAG_FROZENSET,
    TAG_MODEL,
    TAG_NDARRAY,
    TAG_NPSCALAR,
    TAG_SET,
    TAG_TIME,
    TAG_TIMEDELTA,
    TAG_TUPLE,
    ResultDecodeError,
)

# Tags cbor2 6 turns into Python objects by itself (found by decoding every tag below 70000).
# Each is overridden so that a message cannot make the decoder build those objects.
_CBOR2_NATIVE_TAGS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54)
_CBOR2_NATIVE_TAGS += (100, 256, 258, 260, 261, 1004, 43000, 55799)

# Deeper than anything encode() can produce before Python's recursion limit stops it.
_MAX_DEPTH = 1024


class _HasBuffer(Protocol):
    @property
    def buffer(self) -> memoryview: ...


# A received frame: bytes-like, or a zmq.Frame (whose ``.buffer`` is a memoryview).
FrameLike: TypeAlias = "bytes | bytearray | memoryview | _HasBuffer"


def decode(frames: Sequence[FrameLike], allowed: ClassAllowList) -> Any:
    """Rebuild the result that :func:`encode` turned into ``frames``.

    Arrays are views of the received frames, not copies; they are read-only when the frames
    are (``bytes``, zmq frames): ``.copy()`` one before changing it in place. Anything that
    is not such a result raises :class:`ResultDecodeError`.
    """
    try:
        views = [_as_bytes_view(f) for f in frames]
    except Exception as exc:
        raise ResultDecodeError(f"a frame is not a byte buffer: {exc}") from None
    if not views:
        raise ResultDecodeError("no frames: a result has at least its header")
    decoding = _Decoding(views, allowed)
    header = views[0]
    fp = io.BytesIO(header)
    try:
        doc = cbor2.CBORDecoder(
            fp,
            tag_hook=_unknown_tag,
            semantic_decoders=decoding.decoders(),
            max_depth=_MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        ).decode()
    except Exception as exc:
        raise _as_decode_error(exc) from None
    if fp.tell() != header.nbytes:
        raise ResultDecodeError(
            f"result header has {header.nbytes - fp.tell()} bytes after its end"
        )
    if (
        type(doc) is not list
        or len(doc) != 3
        or doc[0] != FORMAT_VERSION
        or type(doc[0]) is not int
    ):
        raise ResultDecodeError("frame 0 is not a result header (format version 1)")
    if doc[1] != len(views) - 1 or type(doc[1]) is not int:
        raise ResultDecodeError(
            f"result header announces {doc[1]!r} buffers but {len(views) - 1} frames follow it"
        )
    unused = [i for i, used in enumerate(decoding.used) if not used and i > 0]
    if unused:
        raise ResultDecodeError(f"frames {unused} are not referenced by the result header")
    return doc[2]


def _as_bytes_view(frame: Any) -> memoryview:
    buffer = frame.buffer if hasattr(frame, "buffer") else frame
    view = memoryview(buffer)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


def _as_decode_error(exc: BaseException) -> ResultDecodeError:
    # cbor2 wraps what our tag decoders raise; surface their message rather than cbor2's.
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ResultDecodeError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return ResultDecodeError(f"malformed result header: {type(exc).__name__}: {exc}")


def _unknown_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise ResultDecodeError(f"result header uses CBOR tag {tag.tag}, which is not ours")


def _refuse_native(tag: int) -> Callable[[Any, bool], Any]:
    def refuse(value: Any, immutable: bool) -> Any:
        raise ResultDecodeError(f"result header uses CBOR tag {tag}, which is not ours")

    return refuse


def _bignum(value: Any, immutable: bool) -> int:
    if type(value) is not bytes:
        raise ResultDecodeError("CBOR bignum must be a byte string")
    return int.from_bytes(value, "big")


def _negative_bignum(value: Any, immutable: bool) -> int:
    return -1 - _bignum(value, immutable)


def _seq(value: Any, what: str) -> list[Any] | tuple[Any, ...]:
    if type(value) is not list and type(value) is not tuple:
        raise ResultDecodeError(f"{what} must be an array")
    return value


def _dec_tuple(value: Any, immutable: bool) -> tuple[Any, ...]:
    return tuple(_seq(value, "tuple"))


def _dec_set(value: Any, immutable: bool) -> set[Any]:
    try:
        return set(_seq(value, "set"))
    except TypeError as exc:
        raise ResultDecodeError(f"set element: {exc}") from None


def _dec_frozenset(value: Any, immutable: bool) -> frozenset[Any]:
    try:
        return frozenset(_seq(value, "frozenset"))
    except TypeError as exc:
        raise ResultDecodeError(f"frozenset element: {exc}") from None


def _dec_dict(value: Any, immutable: bool) -> dict[Any, Any]:
    flat = _seq(value, "dict")
    if len(flat) % 2:
        raise ResultDecodeError("dict needs an even number of items")
    try:
        out = dict(zip(flat[::2], flat[1::2], strict=True))
    except TypeError as exc:
        raise ResultDecodeError(f"dict key: {exc}") from None
    if len(out) != len(flat) // 2:
        raise ResultDecodeError("dict has duplicate keys")
    return out


def _dec_complex(value: Any, immutable: bool) -> complex:
    parts = _seq(value, "complex")
    if len(parts) != 2 or not all(type(p) is float or type(p) is int for p in parts):
        raise ResultDecodeError("complex must be [real, imag]")
    return complex(parts[0], parts[1])


def _dec_bytearray(value: Any, immutable: bool) -> bytearray:
    if type(value) is not bytes:
        raise ResultDecodeError("bytearray must be a byte string")
    return bytearray(value)


def _iso(parse: Callable[[str], Any], what: str) -> Callable[[Any, bool], Any]:
    def dec(value: Any, immutable: bool) -> Any:
        if type(value) is not str:
            raise ResultDecodeError(f"{what} must be ISO 8601 text")
        try:
            return parse(value)
        except ValueError as exc:
            raise ResultDecodeError(f"{what}: {exc}") from None

    return dec


def _dec_timedelta(value: Any, immutable: bool) -> dt.timedelta:
    parts = _seq(value, "timedelta")
    if len(parts) != 3 or not all(type(p) is int for p in parts):
        raise ResultDecodeError("timedelta must be [days, seconds, microseconds]")
    try:
        return dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])
    except OverflowError as exc:
        raise ResultDecodeError(f"timedelta: {exc}") from None


def _dec_npscalar(value: Any, immutable: bool) -> Any:
    parts = _seq(value, "numpy scalar")
    if len(parts) != 2 or type(parts[1]) is not bytes:
        raise ResultDecodeError("numpy scalar must be [dtype, bytes]")
    dtype = dtype_from_spec(parts[0])
    if len(parts[1]) != dtype.itemsize:
        raise ResultDecodeError(
            f"numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes, got {len(parts[1])}"
        )
    return np.frombuffer(parts[1], dtype=dtype)[0]


_STATIC_DECODERS: dict[int, Callable[[Any, bool], Any]] = {
    **{tag: _refuse_native(tag) for tag in _CBOR2_NATIVE_TAGS},
    2: _bignum,
    3: _negative_bignum,
    TAG_TUPLE: _dec_tuple,
    TAG_SET: _dec_set,
    TAG_FROZENSET: _dec_frozenset,
    TAG_DICT: _dec_dict,
    TAG_COMPLEX: _dec_complex,
    TAG_BYTEARRAY: _dec_bytearray,
    TAG_NPSCALAR: _dec_npscalar,
    TAG_DATETIME: _iso(dt.datetime.fromisoformat, "datetime"),
    TAG_DATE: _iso(dt.date.fromisoformat, "date"),
    TAG_TIME: _iso(dt.time.fromisoformat, "time"),
    TAG_TIMEDELTA: _dec_timedelta,
}


class _Decoding:
    """State of one decode: the frames, which of them are used, the allow list."""

    def __init__(self, views: list[memoryview], allowed: ClassAllowList) -> None:
        self.views = views
        self.used = [False] * len(views)
        self.used[0] = True
        self.allowed = allowed

    def decoders(self) -> Mapping[int, Callable[[Any, bool], Any]]:
        return {
            **_STATIC_DECODERS,
            TAG_NDARRAY: self.ndarray,
            TAG_DATACLASS: self.dataclass,
            TAG_MODEL: self.model,
        }

    def ndarray(self, value: Any, immutable: bool) -> np.ndarray[Any, Any]:
        parts = _seq(value, "array")
        if len(parts) != 4 or type(parts[0]) is not int or type(parts[3]) is not bool:
            raise ResultDecodeError("array must be [frame, dtype, shape, fortran]")
        index, spec, shape_spec, fortran = parts
        if not 0 < index < len(self.views):
            raise ResultDecodeError(
                f"array refers to frame {index}, but the message has frames 1.."
                f"{len(self.views) - 1} for arrays"
            )
        if self.used[index]:
            raise ResultDecodeError(f"frame {index} is referenced twice")
        self.used[index] = True
        dtype = dtype_from_spec(spec)
        shape = shape_from_spec(shape_spec)
        frame = self.views[index]
        expected = dtype.itemsize * math.prod(shape)
        if expected != frame.nbytes:
            raise ResultDecodeError(
                f"array {dtype} {shape} needs {expected} bytes but frame {index} has {frame.nbytes}"
            )
        try:
            return np.frombuffer(frame, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        except Exception as exc:
            raise ResultDecodeError(f"array {dtype} {shape}: {exc}") from None

    def dataclass(self, value: Any, immutable: bool) -> Any:
        parts = _seq(value, "dataclass")
        if len(parts) != 2 or type(parts[1]) is not dict:
            raise ResultDecodeError("dataclass must be [name, {field: value}]")
        name, values = parts
        cls = resolve_class(self.allowed, name)
        if not dataclasses.is_dataclass(cls):
            raise ResultDecodeError(f"refusing to rebuild {name}: it is not a dataclass")
        init: dict[str, Any] = {}
        late: list[tuple[str, Any]] = []
        known = set()
        for f in dataclasses.fields(cls):
            known.add(f.name)
            if f.name in values:
                if f.init:
                    init[f.name] = values[f.name]
                else:
                    late.append((f.name, values[f.name]))
        unknown = set(values) - known
        if unknown:
            raise ResultDecodeError(f"{name} has no fields {sorted(map(str, unknown))}")
        try:
            obj = cls(**init)
            for field_name, field_value in late:
                # object.__setattr__ because frozen dataclasses refuse plain setattr.
                object.__setattr__(obj, field_name, field_value)
        except Exception as exc:
            raise ResultDecodeError(
                f"rebuilding {name} failed: {type(exc).__name__}: {exc}"
            ) from None
        return obj

    def model(self, value: Any, immutable: bool) -> Any:
        parts = _seq(value, "pydantic model")
        if (
            len(parts) != 4
            or type(parts[1]) is not dict
            or (parts[2] is not None and type(parts[2]) is not dict)
            or type(parts[3]) is not list
            or not all(type(k) is str for k in parts[3])
        ):
            raise ResultDecodeError("pydantic model must be [name, fields, extra, fields_set]")
        name, values, extra, fields_set = parts
        cls = resolve_class(self.allowed, name)
        if not issubclass(cls, BaseModel):
            raise ResultDecodeError(f"refusing to rebuild {name}: it is not a pydantic model")
        # model_construct, not model_validate: the worker's model was validated when it was
        # built; validating again would re-run transforming validators and trip over aliases.
        try:
            return cls.model_construct(_fields_set=set(fields_set), **values, **(extra or {}))
        except Exception as exc:
            raise ResultDecodeError(
                f"rebuilding {name} failed: {type(exc).__name__}: {exc}"
            ) from None
