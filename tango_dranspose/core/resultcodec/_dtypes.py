"""Which numpy dtypes may travel, and how they are spelled in the header.

Both directions share one rule (:func:`dtype_problem`): the encoder refuses what the
decoder would refuse, so an unsendable array is reported by the worker that sends it, with its
place in the result, instead of as a broken message at the reducer.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from tango_dranspose.core.resultcodec._wire import ResultDecodeError, short_repr

_MAX_NDIM = 64  # numpy's own limit
# Only these dtype kinds are plain bytes: no object pointers ('O'), no numpy 2 StringDType ('T').
_DTYPE_KINDS = frozenset("biufcmMSUV")


def dtype_problem(dtype: np.dtype[Any]) -> str | None:
    if dtype.hasobject:
        return (
            f"dtype {dtype} holds Python objects, which could be anything; convert it to a "
            "numeric or fixed-width string dtype, or to a list"
        )
    if dtype.kind not in _DTYPE_KINDS:
        return f"dtype {dtype} (kind {dtype.kind!r}) is not plain bytes and cannot be sent"
    if dtype.itemsize == 0:
        return f"dtype {dtype} has no bytes per element"
    if dtype.fields is not None:
        for name in dtype.names or ():
            problem = dtype_problem(dtype.fields[name][0])
            if problem is not None:
                return f"field {name!r}: {problem}"
    if dtype.subdtype is not None:
        return dtype_problem(dtype.subdtype[0])
    return None


def dtype_spec(dtype: np.dtype[Any]) -> Any:
    fields = dtype.fields
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return [dtype_spec(base), list(shape)]
    if fields is None:
        return dtype.str
    names = list(dtype.names or ())
    return {
        "names": names,
        "formats": [dtype_spec(fields[n][0]) for n in names],
        "offsets": [fields[n][1] for n in names],
        "itemsize": dtype.itemsize,
    }


# Parsing a dtype costs more than looking it up; the bound keeps a hostile sender from growing it.
_DTYPE_CACHE: dict[str, np.dtype[Any]] = {}
_DTYPE_CACHE_MAX = 256
_DTYPE_STR = re.compile(r"[<>|][biufcmMSUVO][0-9]{1,12}(\[[0-9]{0,12}[a-zA-Z]{1,8}\])?")


def dtype_from_spec(spec: Any) -> np.dtype[Any]:
    if type(spec) is str:
        cached = _DTYPE_CACHE.get(spec)
        if cached is not None:
            return cached
        # Only the canonical dtype.str that encode() writes: numpy's other spellings include
        # deprecated aliases that warn, and nothing legitimate needs them.
        if _DTYPE_STR.fullmatch(spec) is None:
            raise ResultDecodeError(f"malformed dtype {short_repr(spec)}")
        dtype = _checked_dtype(spec)
        if dtype.str != spec:
            raise ResultDecodeError(f"dtype {spec!r} is not in canonical form {dtype.str!r}")
        if len(_DTYPE_CACHE) < _DTYPE_CACHE_MAX:
            _DTYPE_CACHE[spec] = dtype
        return dtype
    if type(spec) is list and len(spec) == 2:
        return _checked_dtype((dtype_from_spec(spec[0]), shape_from_spec(spec[1])))
    if type(spec) is dict and set(spec) == {"names", "formats", "offsets", "itemsize"}:
        names, formats, offsets = spec["names"], spec["formats"], spec["offsets"]
        if (
            type(names) is not list
            or not all(type(n) is str for n in names)
            or type(formats) is not list
            or type(offsets) is not list
            or not all(type(o) is int for o in offsets)
            or type(spec["itemsize"]) is not int
        ):
            raise ResultDecodeError("malformed structured dtype")
        return _checked_dtype(
            {
                "names": names,
                "formats": [dtype_from_spec(f) for f in formats],
                "offsets": offsets,
                "itemsize": spec["itemsize"],
            }
        )
    raise ResultDecodeError(f"malformed dtype {short_repr(spec)}")


def _checked_dtype(spec: Any) -> np.dtype[Any]:
    try:
        dtype = np.dtype(spec)
    except Exception as exc:
        raise ResultDecodeError(f"bad dtype {short_repr(spec)}: {exc}") from None
    problem = dtype_problem(dtype)
    if problem is not None:
        raise ResultDecodeError(f"refusing dtype {dtype}: {problem}")
    return dtype


def shape_from_spec(value: Any) -> tuple[int, ...]:
    if (type(value) is not list and type(value) is not tuple) or not all(
        type(n) is int and n >= 0 for n in value
    ):
        raise ResultDecodeError("array shape must be a list of non-negative integers")
    if len(value) > _MAX_NDIM:
        raise ResultDecodeError(f"array has {len(value)} dimensions (numpy allows {_MAX_NDIM})")
    return tuple(value)
