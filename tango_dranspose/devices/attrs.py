"""Declaring read-only attributes that return a value from the device's latest snapshot."""

from __future__ import annotations

from typing import Any

from tango import AttrWriteType
from tango.server import attribute


def snap(
    name: str,
    dtype: Any,
    doc: str,
    *,
    default: Any = None,
    unit: str = "",
    max_dim_x: int = 0,
    **kwargs: Any,
) -> attribute:
    if default is None:
        default = (
            [] if isinstance(dtype, tuple) else {str: "", bool: False, float: 0.0}.get(dtype, 0)
        )

    def fget(self: Any) -> Any:
        return self.value(name, default)

    fget.__name__ = f"read_{name}"
    extra: dict[str, Any] = {"max_dim_x": max_dim_x or 4096} if isinstance(dtype, tuple) else {}
    return attribute(
        name=name,
        dtype=dtype,
        doc=doc,
        unit=unit,
        access=AttrWriteType.READ,
        fget=fget,
        **extra,
        **kwargs,
    )
