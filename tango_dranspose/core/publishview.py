"""A payload's ``publish`` tree seen as a flat list of typed values, for Tango attributes.

Each leaf becomes one attribute:

- numbers, numpy scalars and bools: a scalar; strings: a string scalar;
- 1-D arrays and lists of numbers: a spectrum; lists of strings: a string spectrum;
- 2-D arrays: an image. Higher dimensions, objects and empty values are not attributes
  (``Leaf.problem`` says why; the HDF5 file still has them).

Naming rule: the tree path with every character that is not a letter, digit or underscore
replaced by ``_`` (``azint/I`` -> ``azint_I``, ``roi 1/sum`` -> ``roi_1_sum``), prefixed with
``r_`` when it does not start with a letter. When two paths give the same name (compared
without case, as Tango does), the path that sorts first keeps it and the others get ``_2``,
``_3``, ... in path order, so names do not depend on the order keys were added. Names already
taken by the device (``State``, ``Status``, its own attributes) count as used.

``NAME_attrs`` entries (the dranspose convention for HDF5 attributes of ``NAME``) give the
attribute's ``units`` (or ``unit``), ``long_name`` (or ``label``) and ``description``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

ATTRS_SUFFIX = "_attrs"
MAX_NAME = 255


@dataclass(frozen=True)
class Leaf:
    path: str
    kind: str  # "scalar" | "spectrum" | "image" | "" (not an attribute)
    dtype: str  # "bool" | "int64" | "float64" | "str" | numpy dtype name of arrays
    value: Any
    unit: str = ""
    label: str = ""
    description: str = ""
    problem: str = ""
    nbytes: int = 0


_NUMERIC = {"b": "bool", "i": "int64", "u": "uint64", "f": "float64"}
# Tango array types; other dtypes are converted to the nearest one (kept where they exist).
_TANGO_ARRAY = {
    "bool",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
}


class _Meta(TypedDict, total=False):
    unit: str
    label: str
    description: str


def _meta(attrs: Any) -> _Meta:
    if not isinstance(attrs, Mapping):
        return {}
    unit = attrs.get("units", attrs.get("unit", ""))
    label = attrs.get("long_name", attrs.get("label", ""))
    return {
        "unit": str(unit) if unit is not None else "",
        "label": str(label) if label is not None else "",
        "description": str(attrs.get("description", "") or ""),
    }


def _array_leaf(path: str, arr: np.ndarray, meta: _Meta) -> Leaf:
    if arr.dtype.kind in "US":
        if arr.ndim == 1:
            return Leaf(path, "spectrum", "str", [str(v) for v in arr], **meta)
        return Leaf(path, "", "str", None, problem="string arrays of more than 1 dimension")
    if arr.dtype.kind not in "biuf":
        return Leaf(path, "", str(arr.dtype), None, problem=f"dtype {arr.dtype} is not a number")
    if arr.ndim == 0:
        return _scalar_leaf(path, arr.item(), meta)
    if arr.ndim > 2:
        return Leaf(path, "", str(arr.dtype), None, problem=f"{arr.ndim} dimensions (at most 2)")
    if arr.size == 0:
        return Leaf(path, "", str(arr.dtype), None, problem="empty")
    dtype = str(arr.dtype) if str(arr.dtype) in _TANGO_ARRAY else _NUMERIC[arr.dtype.kind]
    kind = "spectrum" if arr.ndim == 1 else "image"
    return Leaf(path, kind, dtype, arr, nbytes=int(arr.nbytes), **meta)


def _scalar_leaf(path: str, value: Any, meta: _Meta) -> Leaf:
    if isinstance(value, bool | np.bool_):
        return Leaf(path, "scalar", "bool", bool(value), **meta)
    if isinstance(value, int | np.integer):
        return Leaf(path, "scalar", "int64", int(value), **meta)
    if isinstance(value, float | np.floating):
        return Leaf(path, "scalar", "float64", float(value), **meta)
    if isinstance(value, str):
        return Leaf(path, "scalar", "str", value, **meta)
    return Leaf(path, "", type(value).__name__, None, problem=f"{type(value).__name__} values")


def leaves(tree: Any, prefix: str = "") -> Iterator[Leaf]:
    """Every leaf of a publish tree, in key order, with its kind and metadata."""
    if not isinstance(tree, Mapping):
        return
    for key, value in tree.items():
        key = str(key)
        if key.startswith("_") or key.endswith(ATTRS_SUFFIX):
            continue
        path = f"{prefix}/{key}" if prefix else key
        meta = _meta(tree.get(f"{key}{ATTRS_SUFFIX}"))
        if isinstance(value, Mapping):
            yield from leaves(value, path)
        elif isinstance(value, np.ndarray):
            yield _array_leaf(path, value, meta)
        elif isinstance(value, list | tuple):
            if value and all(isinstance(v, str) for v in value):
                yield Leaf(path, "spectrum", "str", list(value), **meta)
                continue
            try:
                arr = np.asarray(value)
            except ValueError:
                arr = np.asarray([], dtype=object)
            if arr.dtype == object or arr.dtype.kind in "US" or arr.size == 0:
                yield Leaf(path, "", "list", None, problem="a list that is not numbers or strings")
            else:
                yield _array_leaf(path, arr, meta)
        else:
            yield _scalar_leaf(path, value, meta)


def base_name(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", path)
    if not name or not name[0].isalpha():
        name = f"r_{name}"
    return name[:MAX_NAME]


def assign_names(paths: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """Attribute name of each path, by the module's rule (deterministic for a set of paths)."""
    used = {t.lower() for t in taken}
    out: dict[str, str] = {}
    for path in sorted(set(paths)):
        base = base_name(path)
        name, n = base, 2
        while name.lower() in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name.lower())
        out[path] = name
    return out
