"""Results of ``process_event`` as ZeroMQ frames, without pickle.

Workers send what user code returns to the reducer. dranspose pickles it, which lets whoever can
reach the reducer's socket run code there. Here frame 0 is a CBOR header describing the result
and frames 1.. are the raw bytes of its numpy arrays, sent and received without copying.

Header (frame 0): the CBOR array ``[1, n_buffers, root]``. ``1`` is the format version,
``n_buffers`` must equal ``len(frames) - 1``. ``root`` is the result: ``str``, ``int`` (big ones
as CBOR bignums), ``float``, ``bool``, ``None``, ``bytes``, lists and str-keyed dicts are native
CBOR; everything else is one of the private tags below (they mean something only between
:func:`encode` and :func:`decode`).

===============  ======================================================================
tag              value
===============  ======================================================================
TAG_TUPLE        array of items
TAG_SET          array of items
TAG_FROZENSET    array of items
TAG_DICT         array ``[k0, v0, k1, v1, ...]``; dicts whose keys are not all ``str``
TAG_COMPLEX      ``[real, imag]``
TAG_BYTEARRAY    byte string
TAG_NDARRAY      ``[frame_index, dtype, shape, fortran]``: ``frames[frame_index]`` holds the
                 ``prod(shape) * itemsize`` bytes, in Fortran order when ``fortran`` is true
TAG_NPSCALAR     ``[dtype, bytes]``
TAG_DATETIME     ``datetime.isoformat()`` text (also TAG_DATE, TAG_TIME)
TAG_TIMEDELTA    ``[days, seconds, microseconds]``
TAG_DATACLASS    ``["module:qualname", {field: value}]``
TAG_MODEL        ``["module:qualname", {field: value}, {extra: value} | null, [fields set]]``
===============  ======================================================================

``dtype`` is ``dtype.str`` (``"<f8"``, ``"|b1"``, ``"<M8[ns]"``...); structured dtypes are
``{"names", "formats", "offsets", "itemsize"}`` and sub-array fields ``[base, shape]``.

Decoding builds only these types. CBOR tags that cbor2 would turn into other Python objects
(regex, MIME, decimal, shared references...) are refused, classes are looked up in
``sys.modules`` (never imported) and only under the prefixes of a :class:`ClassAllowList`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol, TypeAlias

import cbor2
import numpy as np
from pydantic import BaseModel

from tango_dranspose.core.events import ZeroCopyFrame

FORMAT_VERSION = 1

# Private, unregistered tag numbers; chosen clear of every tag cbor2 decodes natively.
TAG_TUPLE = 41200
TAG_SET = 41201
TAG_FROZENSET = 41202
TAG_DICT = 41203
TAG_COMPLEX = 41204
TAG_BYTEARRAY = 41205
TAG_NDARRAY = 41206
TAG_NPSCALAR = 41207
TAG_DATETIME = 41208
TAG_DATE = 41209
TAG_TIME = 41210
TAG_TIMEDELTA = 41211
TAG_DATACLASS = 41212
TAG_MODEL = 41213

# Tags cbor2 6 turns into Python objects by itself (found by decoding every tag below 70000).
# Each is overridden so that a message cannot make the decoder build those objects.
_CBOR2_NATIVE_TAGS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54)
_CBOR2_NATIVE_TAGS += (100, 256, 258, 260, 261, 1004, 43000, 55799)

# Deeper than anything encode() can produce before Python's recursion limit stops it.
_MAX_DEPTH = 1024
_MAX_NDIM = 64  # numpy's own limit
# Only these dtype kinds are plain bytes: no object pointers ('O'), no numpy 2 StringDType ('T').
_DTYPE_KINDS = frozenset("biufcmMSUV")


class ResultCodecError(Exception):
    """A result could not be encoded or decoded."""


class ResultEncodeError(ResultCodecError, TypeError):
    """The result holds something that cannot be sent (the message says what and where)."""


class ResultDecodeError(ResultCodecError, ValueError):
    """The frames are not a result this module wrote, or name a class that is not allowed."""


class _HasBuffer(Protocol):
    @property
    def buffer(self) -> memoryview: ...


# A received frame: bytes-like, or a zmq.Frame (whose ``.buffer`` is a memoryview).
FrameLike: TypeAlias = "bytes | bytearray | memoryview | _HasBuffer"


@dataclasses.dataclass(frozen=True)
class ClassAllowList:
    """Module prefixes whose dataclasses and pydantic models a message may name.

    ``"pkg."`` allows module ``pkg`` and everything below it, not ``pkg_other``.
    """

    prefixes: tuple[str, ...]
    # name -> (module object, class); the module object detects a reload.
    _resolved: dict[str, tuple[ModuleType, type]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        prefixes = tuple(p if p.endswith(".") else p + "." for p in self.prefixes)
        for prefix in prefixes:
            if not all(part.isidentifier() for part in prefix[:-1].split(".")):
                raise ValueError(f"allow-list prefix {prefix!r} is not a dotted module name")
        object.__setattr__(self, "prefixes", prefixes)

    def allows(self, module: str) -> bool:
        dotted = module + "."
        return any(dotted.startswith(prefix) for prefix in self.prefixes)


def allow_list_for(*specs: str) -> ClassAllowList:
    """The allow list for payloads named ``"pkg.module:Class"``: their top-level packages and
    ``tango_dranspose``."""
    prefixes = []
    for spec in specs:
        top = spec.partition(":")[0].split(".")[0]
        if not top.isidentifier():
            raise ValueError(f"{spec!r}: expected 'package.module:ClassName'")
        prefixes.append(top + ".")
    prefixes.append("tango_dranspose.")
    return ClassAllowList(tuple(dict.fromkeys(prefixes)))


# --------------------------------------------------------------------------------------------
# encode


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
            exc.path.append(f"<key {_short_repr(exc.culprit)}>")
        else:
            key = next((k for k, v in obj.items() if v is exc.culprit), "?")
            exc.path.append(f"[{_short_repr(key)}]")
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


def _short_repr(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


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


def _dtype_problem(dtype: np.dtype[Any]) -> str | None:
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
            problem = _dtype_problem(dtype.fields[name][0])
            if problem is not None:
                return f"field {name!r}: {problem}"
    if dtype.subdtype is not None:
        return _dtype_problem(dtype.subdtype[0])
    return None


def _dtype_spec(dtype: np.dtype[Any]) -> Any:
    fields = dtype.fields
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return [_dtype_spec(base), list(shape)]
    if fields is None:
        return dtype.str
    names = list(dtype.names or ())
    return {
        "names": names,
        "formats": [_dtype_spec(fields[n][0]) for n in names],
        "offsets": [fields[n][1] for n in names],
        "itemsize": dtype.itemsize,
    }


def _enc_ndarray(obj: np.ndarray[Any, Any], bufs: list[memoryview]) -> cbor2.CBORTag:
    problem = _dtype_problem(obj.dtype)
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
    return cbor2.CBORTag(TAG_NDARRAY, [len(bufs), _dtype_spec(obj.dtype), list(obj.shape), fortran])


def _enc_npscalar(obj: np.generic, bufs: list[memoryview]) -> cbor2.CBORTag:
    problem = _dtype_problem(obj.dtype)
    if problem is not None:
        raise _Unsupported(obj, problem)
    return cbor2.CBORTag(TAG_NPSCALAR, [_dtype_spec(obj.dtype), obj.tobytes()])


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


# --------------------------------------------------------------------------------------------
# decode


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


# Parsing a dtype costs more than looking it up; the bound keeps a hostile sender from growing it.
_DTYPE_CACHE: dict[str, np.dtype[Any]] = {}
_DTYPE_CACHE_MAX = 256
_DTYPE_STR = re.compile(r"[<>|][biufcmMSUVO][0-9]{1,12}(\[[0-9]{0,12}[a-zA-Z]{1,8}\])?")


def _dtype_from_spec(spec: Any) -> np.dtype[Any]:
    if type(spec) is str:
        cached = _DTYPE_CACHE.get(spec)
        if cached is not None:
            return cached
        # Only the canonical dtype.str that encode() writes: numpy's other spellings include
        # deprecated aliases that warn, and nothing legitimate needs them.
        if _DTYPE_STR.fullmatch(spec) is None:
            raise ResultDecodeError(f"malformed dtype {_short_repr(spec)}")
        dtype = _checked_dtype(spec)
        if dtype.str != spec:
            raise ResultDecodeError(f"dtype {spec!r} is not in canonical form {dtype.str!r}")
        if len(_DTYPE_CACHE) < _DTYPE_CACHE_MAX:
            _DTYPE_CACHE[spec] = dtype
        return dtype
    if type(spec) is list and len(spec) == 2:
        return _checked_dtype((_dtype_from_spec(spec[0]), _shape(spec[1])))
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
                "formats": [_dtype_from_spec(f) for f in formats],
                "offsets": offsets,
                "itemsize": spec["itemsize"],
            }
        )
    raise ResultDecodeError(f"malformed dtype {_short_repr(spec)}")


def _checked_dtype(spec: Any) -> np.dtype[Any]:
    try:
        dtype = np.dtype(spec)
    except Exception as exc:
        raise ResultDecodeError(f"bad dtype {_short_repr(spec)}: {exc}") from None
    problem = _dtype_problem(dtype)
    if problem is not None:
        raise ResultDecodeError(f"refusing dtype {dtype}: {problem}")
    return dtype


def _shape(value: Any) -> tuple[int, ...]:
    if (type(value) is not list and type(value) is not tuple) or not all(
        type(n) is int and n >= 0 for n in value
    ):
        raise ResultDecodeError("array shape must be a list of non-negative integers")
    if len(value) > _MAX_NDIM:
        raise ResultDecodeError(f"array has {len(value)} dimensions (numpy allows {_MAX_NDIM})")
    return tuple(value)


def _dec_npscalar(value: Any, immutable: bool) -> Any:
    parts = _seq(value, "numpy scalar")
    if len(parts) != 2 or type(parts[1]) is not bytes:
        raise ResultDecodeError("numpy scalar must be [dtype, bytes]")
    dtype = _dtype_from_spec(parts[0])
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
        dtype = _dtype_from_spec(spec)
        shape = _shape(shape_spec)
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
        cls = self._resolve(name)
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
        cls = self._resolve(name)
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

    def _resolve(self, name: Any) -> type:
        if type(name) is not str:
            raise ResultDecodeError("class name must be text 'module:QualName'")
        cached = self.allowed._resolved.get(name)
        if cached is not None and sys.modules.get(cached[1].__module__) is cached[0]:
            return cached[1]
        module_name, sep, qualname = name.partition(":")
        if not sep or not module_name or not qualname:
            raise ResultDecodeError(f"refusing class {name!r}: expected 'module:QualName'")
        if not self.allowed.allows(module_name):
            raise ResultDecodeError(
                f"refusing to rebuild {name}: {module_name} is outside the allowed packages "
                f"{list(self.allowed.prefixes)}"
            )
        # Never import: a message must not be able to make us run a module's top level.
        module = sys.modules.get(module_name)
        if module is None:
            raise ResultDecodeError(
                f"refusing to rebuild {name}: module {module_name} is not imported here"
            )
        obj: Any = module
        for part in qualname.split("."):
            if not part.isidentifier() or not (obj is module or isinstance(obj, type)):
                raise ResultDecodeError(f"refusing to rebuild {name}: not a class")
            # __dict__ lookups, not getattr: no module __getattr__ or descriptor runs.
            obj = vars(obj).get(part)
        if not isinstance(obj, type) or not (
            dataclasses.is_dataclass(obj) or issubclass(obj, BaseModel)
        ):
            raise ResultDecodeError(
                f"refusing to rebuild {name}: not a dataclass or pydantic model class"
            )
        # A name imported into an allowed module from elsewhere must not pass as allowed.
        if obj.__module__ != module_name or obj.__qualname__ != qualname:
            raise ResultDecodeError(
                f"refusing to rebuild {name}: it is {obj.__module__}:{obj.__qualname__}"
            )
        self.allowed._resolved[name] = (module, obj)
        return obj
