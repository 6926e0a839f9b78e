"""Unpickling restricted to plain data.

Three upstream protocols (Xspress3 metadata, Contrast, LeCroy timestamps) put pickles on the
wire. Plain unpickling runs whatever callable the bytes name, so anything that reaches us from
a socket or a file goes through :func:`restricted_loads`, which only rebuilds containers,
scalars and numpy arrays and refuses every other global with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle
import warnings
from typing import Any

# (module, name) pairs a pickle of plain data legitimately references.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "tuple"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than plain data."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            if module.startswith("numpy.core"):
                # numpy 2 renamed numpy.core to numpy._core; old pickles still name the former.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return super().find_class(module, name)
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType"):
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from a pickle: only plain data "
            "(containers, numbers, strings, numpy arrays) is accepted"
        )


def restricted_loads(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle ``data`` if it holds plain data only; raise :class:`UnsafePickleError` else."""
    return _DataUnpickler(io.BytesIO(data)).load()
