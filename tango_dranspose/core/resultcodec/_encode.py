"""The encoder: a result as a CBOR header plus one frame per numpy array.

Refusals name what cannot be sent and where it sits in the result
(``result['pts'][1].extra['x']``): each container the error passes on its way up adds its
step to the path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import cbor2
import numpy as np
from pydantic import BaseModel

from tango_dranspose.core.events import ZeroCopyFrame
from tango_dranspose.core.resultcodec._dtypes import dtype_problem, dtype_spec
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
    ResultEncodeError,
    short_repr,
)


class _Unsupported(Exception):
    """Raised inside the encoder; each container on the way up adds its step to ``path``."""

    def __init__(self, culprit: object, reason: str) -> None:
        super().__init__(reason)
        self.culprit = culprit  # the object the next container up must find among its children
        self.offender = culprit
        self.reason = reason
        self.path: list[str] = []
        self.in_key = False


_Enc: TypeAlias = Callable[[Any, list[memoryview]], Any]
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes})
_STR_ONLY: frozenset[type] = frozenset({str})


def encode(obj: object) -> list[bytes | memoryview]:
    """Frames for ``obj``: the CBOR header, then one buffer per numpy array.

    Contiguous arrays are not copied: their frames are views of the arrays' memory, so the
    arrays must not change until the frames are sent. Non-contiguous arrays are copied once.
    """
    buffers: list[memoryview] = []
    try:
        root = _enc(obj, buffers)
        header = cbor2.dumps([FORMAT_VERSION, len(buffers), root])
    except _Unsupported as exc:
        where = "result" + "".join(reversed(exc.path))
        raise ResultEncodeError(
            f"cannot send {_type_name(exc.offender)} at {where}: {exc.reason}"
        ) from None
    except RecursionError:
        raise ResultEncodeError(
            "cannot send the result: it is nested too deeply or contains itself"
        ) from None
    return [header, *buffers]


def _type_name(obj: object) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _enc(obj: Any, bufs: list[memoryview]) -> Any:
    cls = type(obj)
    if cls in _PLAIN:
        return obj
    handler = _ENCODERS.get(cls)
    if handler is not None:
        return handler(obj, bufs)
    return _enc_other(obj, bufs)


def _item_step(container: Any, culprit: object) -> str:
    for i, item in enumerate(container):
        if item is culprit:
            return f"[{i}]"
    return "[?]"


def _enc_list(obj: Any, bufs: list[memoryview]) -> list[Any]:
    try:
        return [v if type(v) in _PLAIN else _enc(v, bufs) for v in obj]
    except _Unsupported as exc:
        exc.path.append(_item_step(obj, exc.culprit))
        exc.culprit = obj
        raise


def _enc_tuple(obj: Any, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_TUPLE, _enc_list(obj, bufs))


def _enc_set(obj: Any, bufs: list[memoryview]) -> cbor2.CBORTag:
    try:
        items = [v if type(v) in _PLAIN else _enc(v, bufs) for v in obj]
    except _Unsupported as exc:
        # Sets have no index; the position in iteration order still tells which element.
        step = _item_step(obj, exc.culprit)
        exc.path.append(f"<set element {step[1:-1]}>")
        exc.culprit = obj
        raise
    return cbor2.CBORTag(TAG_FROZENSET if isinstance(obj, frozenset) else TAG_SET, items)


def _enc_dict(obj: Any, bufs: list[memoryview]) -> Any:
    try:
        if _STR_ONLY.issuperset(map(type, obj)):
            return {k: v if type(v) in _PLAIN else _enc(v, bufs) for k, v in obj.items()}
        flat: list[Any] = []
        for k, v in obj.items():
            flat.append(_enc_key(k, bufs))
            flat.append(v if type(v) in _PLAIN else _enc(v, bufs))
        return cbor2.CBORTag(TAG_DICT, flat)
    except _Unsupported as exc:
        if exc.in_key:
            exc.in_key = False
            exc.path.append(f"<key {short_repr(exc.culprit)}>")
        else:
            key = next((k for k, v in obj.items() if v is exc.culprit), "?")
            exc.path.append(f"[{short_repr(key)}]")
        exc.culprit = obj
        raise


_KEY_TYPES = (str, int, float, bool, type(None), tuple, frozenset, bytes, np.generic)


def _enc_key(key: Any, bufs: list[memoryview]) -> Any:
    if not isinstance(key, _KEY_TYPES):
        exc = _Unsupported(
            key, "dict keys must be str, int, float, bool, None, bytes, tuples or numpy scalars"
        )
        exc.in_key = True
        raise exc
    try:
        return _enc(key, bufs)
    except _Unsupported as exc:
        exc.in_key = True
        exc.culprit = key
        raise


def _enc_complex(obj: complex, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_COMPLEX, [obj.real, obj.imag])


def _enc_bytearray(obj: bytearray, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_BYTEARRAY, bytes(obj))


def _enc_datetime(obj: dt.datetime, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_DATETIME, obj.isoformat())


def _enc_date(obj: dt.date, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_DATE, obj.isoformat())


def _enc_time(obj: dt.time, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_TIME, obj.isoformat())


def _enc_timedelta(obj: dt.timedelta, bufs: list[memoryview]) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_TIMEDELTA, [obj.days, obj.seconds, obj.microseconds])


def _enc_ndarray(obj: np.ndarray[Any, Any], bufs: list[memoryview]) -> cbor2.CBORTag:
    problem = dtype_problem(obj.dtype)
    if problem is not None:
        raise _Unsupported(obj, problem)
    flags = obj.flags
    fortran = False
    if not flags.c_contiguous:
        if flags.f_contiguous:
            fortran = True
        else:
            obj = np.ascontiguousarray(obj)
    # A flat uint8 view gives a plain byte buffer for every dtype (memoryview refuses
    # datetime64 and Fortran-ordered arrays) and still points at the array's memory.
    flat = obj.reshape(-1, order="F" if fortran else "C").view(np.uint8)
    bufs.append(flat.data)
    return cbor2.CBORTag(TAG_NDARRAY, [len(bufs), dtype_spec(obj.dtype), list(obj.shape), fortran])


def _enc_npscalar(obj: np.generic, bufs: list[memoryview]) -> cbor2.CBORTag:
    problem = dtype_problem(obj.dtype)
    if problem is not None:
        raise _Unsupported(obj, problem)
    return cbor2.CBORTag(TAG_NPSCALAR, [dtype_spec(obj.dtype), obj.tobytes()])


def _class_name(obj: object) -> str:
    cls = type(obj)
    qualname = cls.__qualname__
    if not all(part.isidentifier() for part in qualname.split(".")):
        raise _Unsupported(
            obj,
            "the reducer can only rebuild classes defined at module level "
            f"(qualified name {qualname!r})",
        )
    return f"{cls.__module__}:{qualname}"


def _enc_fields(
    obj: Any, items: Iterable[tuple[str, Any]], bufs: list[memoryview]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    name = ""
    try:
        for name, value in items:
            out[name] = value if type(value) in _PLAIN else _enc(value, bufs)
    except _Unsupported as exc:
        exc.path.append(f".{name}")
        exc.culprit = obj
        raise
    return out


def _enc_dataclass(obj: Any, bufs: list[memoryview]) -> cbor2.CBORTag:
    items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    return cbor2.CBORTag(TAG_DATACLASS, [_class_name(obj), _enc_fields(obj, items, bufs)])


def _enc_model(obj: BaseModel, bufs: list[memoryview]) -> cbor2.CBORTag:
    name = _class_name(obj)
    fields = _enc_fields(obj, [(n, getattr(obj, n)) for n in type(obj).model_fields], bufs)
    extra = obj.__pydantic_extra__
    extra_enc = None if not extra else _enc_fields(obj, extra.items(), bufs)
    fields_set = sorted(obj.__pydantic_fields_set__)
    return cbor2.CBORTag(TAG_MODEL, [name, fields, extra_enc, fields_set])


def _enc_other(obj: Any, bufs: list[memoryview]) -> Any:
    """Types not matched exactly: numpy scalars, classes, and subclasses of supported types."""
    if isinstance(obj, np.generic):
        _ENCODERS[type(obj)] = _enc_npscalar  # numpy's own scalar types: a small fixed set
        return _enc_npscalar(obj, bufs)
    if isinstance(obj, np.ndarray):
        if isinstance(obj, np.ma.MaskedArray):
            raise _Unsupported(obj, "the mask would be lost; send data and mask as two arrays")
        return _enc_ndarray(obj, bufs)  # memmap, matrix...: received as plain ndarray
    if isinstance(obj, BaseModel):
        return _enc_model(obj, bufs)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _enc_dataclass(obj, bufs)
    # Subclasses of supported types arrive as the base type (OrderedDict as dict, a
    # namedtuple as tuple, IntEnum/StrEnum members as their value).
    if isinstance(obj, dict):
        return _enc_dict(obj, bufs)
    if isinstance(obj, list):
        return _enc_list(obj, bufs)
    if isinstance(obj, tuple):
        return _enc_tuple(obj, bufs)
    if isinstance(obj, set | frozenset):
        return _enc_set(obj, bufs)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, complex):
        return _enc_complex(obj, bufs)
    if isinstance(obj, ZeroCopyFrame):
        # A received frame (e.g. the raw buffer a parsed message keeps) travels as bytes.
        return obj.bytes
    if isinstance(obj, bytes):
        return bytes(memoryview(obj))
    raise _Unsupported(
        obj,
        "not a supported result type (containers, scalars, bytes, numpy arrays and scalars, "
        "datetimes, dataclasses and pydantic models)",
    )


_ENCODERS: dict[type, _Enc] = {
    dict: _enc_dict,
    list: _enc_list,
    tuple: _enc_tuple,
    set: _enc_set,
    frozenset: _enc_set,
    complex: _enc_complex,
    bytearray: _enc_bytearray,
    np.ndarray: _enc_ndarray,
    dt.datetime: _enc_datetime,
    dt.date: _enc_date,
    dt.time: _enc_time,
    dt.timedelta: _enc_timedelta,
}
