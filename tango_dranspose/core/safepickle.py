"""Unpickling restricted to plain data, and bounded by the size of the pickle.

Three upstream protocols (Xspress3 metadata, Contrast, LeCroy timestamps) put pickles on the
wire. Plain unpickling runs whatever callable the bytes name, so anything that reaches us from
a socket or a file goes through :func:`restricted_loads`, which only rebuilds containers,
scalars and numpy arrays and refuses every other global with :class:`UnsafePickleError`.

Refusing code is not enough: a few bytes of pickle can also ask for gigabytes. CPython's
unpickler allocates a ``bytes`` or ``bytearray`` of the declared length before reading it (11
bytes declaring 2**62 bytes), ``bytearray(n)`` and numpy's ``_reconstruct`` allocate by
number, memo references multiply one object into many, and numpy's own dtype unpickling
trusts its input (a malformed state crashes the interpreter, a crafted one makes raw bytes
pass for object pointers). So :func:`restricted_loads`

* walks the opcodes first and refuses a declared length or memo index that the input cannot
  hold, before anything is allocated;
* hands out guarded versions of the allowed callables, which refuse allocation by number and
  charge every copy against a budget proportional to the input;
* builds numpy dtypes itself from checked parts, never through numpy's ``__setstate__``:
  numbers, byte and text strings, raw bytes and datetimes; no fields, subarrays or objects;
* checks the result as its readers will walk it: nesting at most :data:`MAX_DEPTH` deep, no
  cycles, no more references (shared ones counted each time) than the input can plainly hold.

Anything wrong with the bytes is a :class:`MalformedPickleError` (an ``UnpicklingError``);
no other exception leaves :func:`restricted_loads` for any input.
"""

from __future__ import annotations

import collections
import datetime
import functools
import io
import math
import pickle
import pickletools
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_DEPTH = 64
"""Containers nested deeper than this are refused (consumers of the data recurse)."""

_BUDGET_PER_BYTE = 16
_BUDGET_BASE = 1 << 16


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than plain data."""


class MalformedPickleError(pickle.UnpicklingError):
    """Not a loadable pickle of plain data: corrupt, truncated, declaring more than it holds,
    nested too deeply, or cyclic."""


# -- the opcode walk, before loading ---------------------------------------------------------

# Per opcode byte, how far the opcode and its fixed-width argument reach (> 0), or how to
# step over it (the codes below). Plain opcodes take the short path of the walk.
_SHORT, _U4, _COUNTED, _SIZED, _LINES, _STOP, _INVALID = -1, -2, -3, -4, -5, -6, -7
_COUNT_FORMATS = {
    pickletools.TAKEN_FROM_ARGUMENT4: struct.Struct("<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: struct.Struct("<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: struct.Struct("<Q"),
}
# FRAME's argument is a size, LONG_BINPUT's a memo index: both are checked against the input.
_SIZE_FORMATS = {0x95: struct.Struct("<Q"), ord("r"): struct.Struct("<I")}


def _opcode_table() -> tuple[list[int], dict[int, struct.Struct], dict[int, int]]:
    steps = [_INVALID] * 256
    counts: dict[int, struct.Struct] = {}
    lines: dict[int, int] = {}
    for op in pickletools.opcodes:
        code, arg = ord(op.code), op.arg
        if op.name == "STOP":
            steps[code] = _STOP
        elif code in _SIZE_FORMATS:
            steps[code] = _SIZED
        elif arg is None or arg.n >= 0:
            steps[code] = 1 + (arg.n if arg is not None else 0)
        elif arg.n == pickletools.UP_TO_NEWLINE:
            steps[code] = _LINES
            lines[code] = 2 if arg.name.endswith("_pair") else 1
        elif arg.n == pickletools.TAKEN_FROM_ARGUMENT1:
            steps[code] = _SHORT
        elif arg.n == pickletools.TAKEN_FROM_ARGUMENT4U:
            steps[code] = _U4
        else:
            steps[code] = _COUNTED
            counts[code] = _COUNT_FORMATS[arg.n]
    return steps, counts, lines


_STEPS, _COUNTS, _LINE_COUNTS = _opcode_table()
_PUT = ord("p")
_UINT4 = struct.Struct("<I")


def _walk_opcodes(raw: bytes) -> None:
    """Refuse a pickle whose declared lengths, frame sizes or memo indices exceed the input.

    CPython allocates a counted bytes/bytearray before reading it and grows the memo to the
    largest index it is told to use: both must be checked before the unpickler sees the data.
    This walk runs for every pickle, so the common opcodes take one short path; a length
    that reaches past the end ends the walk, which then refuses the pickle as truncated.
    """
    end = len(raw)
    pos = 0
    steps, uint4 = _STEPS, _UINT4
    while pos < end:
        step = steps[raw[pos]]
        if step > 0:
            pos += step
        elif step == _SHORT:
            pos += 2 + raw[pos + 1] if pos + 1 < end else end
        elif step == _U4:
            pos += 5 + uint4.unpack_from(raw, pos + 1)[0] if pos + 5 <= end else end
        elif step == _STOP:
            return
        else:
            pos = _step_special(raw, pos, step)
    raise MalformedPickleError("pickle data was truncated")


def _step_special(raw: bytes, pos: int, step: int) -> int:
    """Check and step over one opcode whose argument is a length, a size or text lines."""
    end, op = len(raw), raw[pos]
    pos += 1
    if step == _INVALID:
        raise MalformedPickleError(f"invalid pickle opcode 0x{op:02x} at byte {pos - 1}")
    if step == _LINES:
        for _ in range(_LINE_COUNTS[op]):
            newline = raw.find(b"\n", pos)
            if newline < 0:
                return end
            line = raw[pos:newline]
            if op == _PUT and line.strip().isdigit() and int(line) > end:
                raise MalformedPickleError(f"pickle memo index beyond its {end} bytes")
            pos = newline + 1
        return pos
    fmt = _SIZE_FORMATS[op] if step == _SIZED else _COUNTS[op]
    if pos + fmt.size > end:
        return end
    value = fmt.unpack_from(raw, pos)[0]
    pos += fmt.size
    if step == _SIZED:
        if value > end:
            raise MalformedPickleError(f"pickle declares a frame or memo index of {value}")
        return pos
    if value < 0 or pos + value > end:
        raise MalformedPickleError(
            f"pickle declares {value} bytes at byte {pos}, {max(end - pos, 0)} remain"
        )
    return pos + value


# -- guarded callables ---------------------------------------------------------------------


class _Budget:
    """How much one load may still copy or allocate, in items or bytes."""

    __slots__ = ("units",)

    def __init__(self, units: int) -> None:
        self.units = units

    def charge(self, units: int, what: str) -> None:
        if units > self.units:
            raise MalformedPickleError(
                f"pickle asks for a {what} of {units}, more than its size can account for"
            )
        self.units -= units


class _Guarded:
    """An allowed callable as one load sees it: arguments checked, copies charged."""

    __slots__ = ("budget", "check", "name", "real")

    def __init__(self, name: str, real: Any, check: Callable[..., Any], budget: _Budget) -> None:
        self.name, self.real, self.check, self.budget = name, real, check, budget

    def __call__(self, *args: Any) -> Any:
        return self.check(self.budget, *args)

    def __repr__(self) -> str:
        return f"<guarded {self.name}>"


class _Token:
    """A class a pickle of plain data names only as an argument (``numpy.ndarray``, which
    numpy's ``_reconstruct`` receives); calling it is refused."""

    __slots__ = ("real",)

    def __init__(self, real: type) -> None:
        self.real = real


_NDARRAY = _Token(np.ndarray)
_PLAIN_KINDS = frozenset("biufcSUVMm")
_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})
_TIME_UNITS = frozenset({"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"})


class _DtypeSpec:
    """What ``numpy.dtype(...)`` gives during a load: the arguments and the state the pickle
    holds for it, not yet a dtype.

    numpy's own ``dtype.__setstate__`` trusts its input: a malformed state crashes the
    interpreter (a 6-tuple segfaults numpy 2.4) and a crafted one marks raw bytes as object
    pointers. So the state is only recorded here, and :func:`plain_dtype` builds the dtype
    from a description it checked, never through that method.
    """

    __slots__ = ("spec", "state")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


@functools.lru_cache(maxsize=64)
def _simple_dtype(text: str) -> np.dtype[Any]:
    return np.dtype(text)


def plain_dtype(value: Any) -> np.dtype[Any]:
    """The numpy dtype a pickle described, built from checked parts; :class:`MalformedPickleError`
    for anything but plain numbers, byte and text strings, raw bytes and datetimes (no fields,
    no subarrays, no objects)."""
    if not isinstance(value, _DtypeSpec):
        raise MalformedPickleError(f"expected a numpy dtype, got {type(value).__name__}")
    try:
        base = _simple_dtype(value.spec)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise MalformedPickleError(f"invalid numpy dtype {value.spec!r} in pickle: {exc}") from None
    if base.fields is not None or base.subdtype is not None or base.kind not in _PLAIN_KINDS:
        raise MalformedPickleError(f"numpy dtype {base} in a pickle is not plain data")
    if value.state is None:
        return base
    return _apply_state(base, value.state)


def _apply_state(base: np.dtype[Any], state: Any) -> np.dtype[Any]:
    """``base`` with the byte order, size and time unit of a numpy dtype pickle state
    ``(version, endian, subarray, names, fields, elsize, alignment, flags[, metadata])``."""
    if type(state) is not tuple or len(state) not in (8, 9):
        raise MalformedPickleError("invalid numpy dtype state in pickle")
    version, endian, subarray, names, fields, elsize = state[:6]
    if version not in (3, 4) or endian not in ("<", ">", "|", "="):
        raise MalformedPickleError("invalid numpy dtype state in pickle")
    if subarray is not None or names is not None or fields is not None:
        raise MalformedPickleError("numpy dtypes with fields or subarrays are not accepted")
    if type(elsize) is not int:
        raise MalformedPickleError("invalid numpy dtype state in pickle")
    order = endian if endian in "<>" else "="
    kind = base.kind
    if kind in "SUV":
        size = elsize if elsize > 0 else base.itemsize
        if kind == "U":
            if size % 4:
                raise MalformedPickleError("invalid text dtype size in pickle")
            size //= 4
        text = f"{order if kind == 'U' else '|'}{kind}{size}"
    elif kind in "Mm":
        text = f"{order}{kind}8{_time_unit(state[8] if len(state) == 9 else None)}"
    else:
        text = f"{order if base.itemsize > 1 else '|'}{kind}{base.itemsize}"
    try:
        return _simple_dtype(text)
    except (TypeError, ValueError) as exc:
        raise MalformedPickleError(f"invalid numpy dtype state in pickle: {exc}") from None


def _time_unit(metadata: Any) -> str:
    """``[10ms]`` from numpy's datetime metadata ``(dict or None, (unit, count, 1, 1))``."""
    if metadata is None:
        return ""
    if type(metadata) is not tuple or len(metadata) != 2 or type(metadata[1]) is not tuple:
        raise MalformedPickleError("invalid numpy datetime metadata in pickle")
    unit, count = (metadata[1] + (None, None))[:2]
    if isinstance(unit, bytes):
        unit = unit.decode("ascii", "replace")
    if unit == "generic":
        return ""
    if unit not in _TIME_UNITS or type(count) is not int or not 0 < count < 1 << 31:
        raise MalformedPickleError(f"invalid numpy datetime unit {unit!r} in pickle")
    return f"[{count}{unit}]"


def _shape(value: Any) -> tuple[int, ...]:
    if type(value) is int:
        value = (value,)
    if type(value) not in (tuple, list) or len(value) > 32:
        raise MalformedPickleError(f"invalid array shape {value!r} in pickle")
    for n in value:
        if type(n) is not int or n < 0:  # bool is not int here, on purpose
            raise MalformedPickleError(f"invalid array shape {value!r} in pickle")
    return tuple(value)


def _nbytes(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, pickle.PickleBuffer):
        return memoryview(value).nbytes
    raise MalformedPickleError(f"expected bytes in pickle, got {type(value).__name__}")


class _GuardedArray(np.ndarray):
    """What ``_reconstruct`` gives during a load: its ``__setstate__`` checks the state
    (numpy's own trusts it). Becomes a plain ndarray view once the load is over."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise MalformedPickleError("invalid numpy array state in pickle")
        shape, dtype, fortran, raw = state[-4:]
        shape = _shape(shape)
        dtype = plain_dtype(dtype)
        if isinstance(raw, str):  # pickled by Python 2
            raw = raw.encode("latin1")
        needed = math.prod(shape) * dtype.itemsize
        if _nbytes(raw) != needed:
            raise MalformedPickleError(
                f"numpy array of shape {list(shape)} and {dtype} needs {needed} bytes, "
                f"the pickle holds {_nbytes(raw)}"
            )
        checked: Any = (1, shape, dtype, bool(fortran), raw)
        super().__setstate__(checked)


def _copying(kind: Callable[..., Any], what: str) -> Callable[..., Any]:
    """A container type whose argument, if any, is copied: charged by its length."""

    def make(budget: _Budget, *args: Any) -> Any:
        if len(args) > 1:
            raise MalformedPickleError(f"{what}() with {len(args)} arguments in a pickle")
        if args:
            try:
                n = len(args[0])
            except TypeError:
                raise MalformedPickleError(
                    f"{what}() of a {type(args[0]).__name__} in a pickle"
                ) from None
            budget.charge(n, what)
        return kind(*args)

    return make


def _plain(real: Callable[..., Any]) -> Callable[..., Any]:
    """A constructor of a fixed-size value (complex, datetime, ...): nothing to charge."""

    def make(budget: _Budget, *args: Any) -> Any:
        return real(*args)

    return make


def _bytes_like(kind: type[bytes] | type[bytearray]) -> Callable[..., Any]:
    """bytes() / bytearray() of a byte string or text: never of a number, which would
    allocate that many bytes."""

    def make(budget: _Budget, *args: Any) -> Any:
        if args and not isinstance(args[0], bytes | bytearray | str):
            raise MalformedPickleError(
                f"{kind.__name__}() of a {type(args[0]).__name__} in a pickle: plain data "
                "never asks for an allocation by size"
            )
        if args:
            budget.charge(len(args[0]), kind.__name__)
        return kind(*args)

    return make


def _range(budget: _Budget, *args: Any) -> range:
    value = range(*args)
    budget.charge(len(value), "range")  # whoever receives it may materialise it
    return value


# defaultdict factories a pickle of plain data may name.
_FACTORIES: frozenset[Any] = frozenset({list, dict, set, frozenset, tuple, int, float, str})


def _defaultdict(budget: _Budget, factory: Any = None, *items: Any) -> Any:
    if isinstance(factory, _Guarded):
        factory = factory.real
    if factory is not None and factory not in _FACTORIES:
        raise MalformedPickleError(f"defaultdict factory {factory!r} is not plain data")
    if len(items) > 1:
        raise MalformedPickleError("defaultdict() with too many arguments in a pickle")
    if items:
        budget.charge(len(items[0]), "defaultdict")
    return collections.defaultdict(factory, *items)


def _encode(budget: _Budget, text: Any, encoding: Any = "utf-8") -> bytes:
    # How protocols 0-2 spell bytes: _codecs.encode("\x00...", "latin1").
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise MalformedPickleError("_codecs.encode() of something other than text")
    if encoding.lower() not in _LATIN1:
        raise MalformedPickleError(f"_codecs.encode() with codec {encoding!r} in a pickle")
    budget.charge(len(text), "bytes")
    return text.encode("latin1")


def _dtype(budget: _Budget, spec: Any, align: Any = False, copy: Any = True) -> _DtypeSpec:
    if not isinstance(spec, str) or len(spec) > 32:
        raise MalformedPickleError(f"invalid numpy dtype {spec!r} in pickle")
    return _DtypeSpec(spec)


def _reconstruct(budget: _Budget, subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise MalformedPickleError("numpy _reconstruct() of something other than an ndarray")
    # numpy pickles an empty array here and gives shape, dtype and data in the state that
    # follows; a non-empty one would be uninitialised memory of a size the pickle chose.
    if math.prod(_shape(shape)) != 0:
        raise MalformedPickleError("numpy _reconstruct() of a non-empty array in a pickle")
    return _GuardedArray((0,), np.int8)


def _scalar(budget: _Budget, dtype: Any, raw: Any = None) -> Any:
    dtype = plain_dtype(dtype)
    if isinstance(raw, str):  # pickled by Python 2 or protocol 0-2
        raw = raw.encode("latin1")
    if _nbytes(raw) != dtype.itemsize:
        raise MalformedPickleError(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes")
    return np.frombuffer(raw, dtype=dtype)[0]


def _frombuffer(budget: _Budget, buf: Any, dtype: Any, shape: Any, order: Any = "C") -> Any:
    dtype = plain_dtype(dtype)
    dims = _shape(shape)
    if _nbytes(buf) != math.prod(dims) * dtype.itemsize:
        raise MalformedPickleError(f"numpy buffer does not hold shape {list(dims)} of {dtype}")
    if order not in ("C", "F"):
        raise MalformedPickleError(f"invalid numpy array order {order!r} in pickle")
    return np.frombuffer(buf, dtype=dtype).reshape(dims, order=order)


# (module, name) a pickle of plain data legitimately references: what it stands for after
# the load, and the guarded callable the unpickler gets instead.
_ALLOWED: dict[tuple[str, str], tuple[Any, Callable[..., Any]]] = {
    ("builtins", "list"): (list, _copying(list, "list")),
    ("builtins", "dict"): (dict, _copying(dict, "dict")),
    ("builtins", "set"): (set, _copying(set, "set")),
    ("builtins", "frozenset"): (frozenset, _copying(frozenset, "frozenset")),
    ("builtins", "tuple"): (tuple, _copying(tuple, "tuple")),
    ("builtins", "bytes"): (bytes, _bytes_like(bytes)),
    ("builtins", "bytearray"): (bytearray, _bytes_like(bytearray)),
    ("builtins", "complex"): (complex, _plain(complex)),
    ("builtins", "slice"): (slice, _plain(slice)),
    ("builtins", "range"): (range, _range),
    ("collections", "OrderedDict"): (
        collections.OrderedDict,
        _copying(collections.OrderedDict, "OrderedDict"),
    ),
    ("collections", "defaultdict"): (collections.defaultdict, _defaultdict),
    ("datetime", "datetime"): (datetime.datetime, _plain(datetime.datetime)),
    ("datetime", "date"): (datetime.date, _plain(datetime.date)),
    ("datetime", "time"): (datetime.time, _plain(datetime.time)),
    ("datetime", "timedelta"): (datetime.timedelta, _plain(datetime.timedelta)),
    ("datetime", "timezone"): (datetime.timezone, _plain(datetime.timezone)),
    ("_codecs", "encode"): (None, _encode),
    ("numpy", "dtype"): (np.dtype, _dtype),
}
# numpy 2 renamed numpy.core to numpy._core; old pickles still name the former.
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = (None, _reconstruct)
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = (None, _scalar)
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = (None, _frombuffer)
# Protocols 0-2 name Python 2's modules.
_PY2_NAMES = {("__builtin__", "xrange"): ("builtins", "range")}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, budget: _Budget) -> None:
        super().__init__(file)
        self.budget = budget

    def find_class(self, module: str, name: str) -> Any:
        module, name = _PY2_NAMES.get((module, name), (module, name))
        module = _PY2_MODULES.get(module, module)
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            real, check = allowed
            return _Guarded(f"{module}.{name}", real, check, self.budget)
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from a pickle: only plain data "
            "(containers, numbers, strings, numpy arrays) is accepted"
        )


# -- after loading: the shape of the result ---------------------------------------------------

_LEAVES = frozenset({int, float, str, bytes, bool, type(None), complex, bytearray})


def _children(node: Any) -> Any:
    if isinstance(node, dict):
        return node.values()
    return node


class _Finisher:
    """Checks the loaded value and turns what only the load needed back into plain data:
    guarded arrays into ndarrays, guards into the types they stand for, dtypes built.

    The checks are on the value as its readers will walk it, a tree: a container the pickle
    shares (a memo reference) counts once per reference, with its whole size and height, so
    60 levels of pairs of references to the level below (2**59 leaves in 300 bytes) are
    refused, not handed to numpy. Recursive, but never deeper than :data:`MAX_DEPTH`.
    """

    def __init__(self, max_visits: int) -> None:
        self.visits_left = max_visits
        # By id of the loaded object: it, and what it became. Holding the loaded object keeps
        # its id from being reused by a new one while the rest is finished.
        self.done: dict[int, tuple[Any, Any]] = {}
        self.sizes: dict[int, int] = {}  # visits of a finished container's tree
        self.heights: dict[int, int] = {}  # its nesting height, 1 for a flat one
        self.open: set[int] = set()

    def _charge(self, visits: int) -> None:
        self.visits_left -= visits
        if self.visits_left < 0:
            raise MalformedPickleError("pickle refers to more objects than its size can hold")

    def __call__(self, value: Any, depth: int = 0) -> Any:
        self._charge(1)
        if type(value) in _LEAVES:
            return value
        key = id(value)
        if key in self.open:
            raise MalformedPickleError("pickle holds a container that contains itself")
        if key in self.done:
            if depth + self.heights.get(key, 0) > MAX_DEPTH:
                raise MalformedPickleError(f"pickle nests containers more than {MAX_DEPTH} deep")
            self._charge(self.sizes.get(key, 0))
            return self.done[key][1]
        if isinstance(value, list | tuple | set | frozenset | dict):
            if depth >= MAX_DEPTH:
                raise MalformedPickleError(f"pickle nests containers more than {MAX_DEPTH} deep")
            self.open.add(key)
            before = self.visits_left
            out = self._container(value, depth + 1)
            self.open.discard(key)
            self.sizes[key] = self.sizes[id(out)] = before - self.visits_left
            self.heights[key] = self.heights[id(out)] = 1 + max(
                (self.heights.get(id(child), 0) for child in _children(out)), default=0
            )
        else:
            out = self._leaf(value)
        self.done[key] = self.done[id(out)] = (value, out)
        return out

    def _container(self, value: Any, depth: int) -> Any:
        # Most containers hold only numbers and strings: those are checked at C speed.
        if isinstance(value, dict):
            self._charge(2 * len(value))
            if set(map(type, value)) <= _LEAVES:
                for key, item in value.items():
                    if type(item) not in _LEAVES:
                        # Assigning an existing key keeps the order (OrderedDict too).
                        value[key] = self(item, depth)
            else:
                items = [(self(k, depth), self(v, depth)) for k, v in value.items()]
                value.clear()
                value.update(items)
            return value
        if isinstance(value, list):
            if set(map(type, value)) <= _LEAVES:
                self._charge(len(value))
            else:
                value[:] = [self(item, depth) for item in value]
            return value
        return type(value)(self(item, depth) for item in value)

    def _leaf(self, value: Any) -> Any:
        if isinstance(value, _GuardedArray):
            return value.view(np.ndarray)
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise MalformedPickleError("numpy object arrays are not plain data")
        if isinstance(value, _Guarded | _Token):
            if not isinstance(value.real, type):
                raise MalformedPickleError(f"{value!r} is a function, not plain data")
            return value.real
        if isinstance(value, _DtypeSpec):
            return plain_dtype(value)
        return value


def restricted_loads(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle ``data`` if it holds plain data only.

    :class:`UnsafePickleError` when it names anything else, :class:`MalformedPickleError` for
    any other problem (never MemoryError, OverflowError, RecursionError or the like).
    """
    raw = bytes(data)
    _walk_opcodes(raw)
    budget = _Budget(_BUDGET_PER_BYTE * len(raw) + _BUDGET_BASE)
    try:
        value = _DataUnpickler(io.BytesIO(raw), budget).load()
        # Every reference costs the pickle at least one byte, unless it shares an object.
        return _Finisher(2 * len(raw) + 4096)(value)
    except pickle.UnpicklingError:
        raise
    except Exception as exc:
        # Whatever the unpickler or numpy raise on hostile bytes: all mean "not plain data".
        raise MalformedPickleError(f"not a valid pickle: {type(exc).__name__}: {exc}") from None
