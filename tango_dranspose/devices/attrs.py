"""Declaring read-only attributes that return a value from the device's latest snapshot."""

from __future__ import annotations

from typing import Any

from tango import AttrDataFormat, AttrWriteType
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


SPECTRUM_MAX = 1 << 26
IMAGE_MAX = 1 << 16


def array_format(kind: str) -> dict[str, Any]:
    """``attribute`` arguments of a dynamic value of ``kind`` (scalar, spectrum, image):
    generous maxima, since a value's size is only known when it arrives."""
    if kind == "spectrum":
        return {"dformat": AttrDataFormat.SPECTRUM, "max_dim_x": SPECTRUM_MAX}
    if kind == "image":
        return {"dformat": AttrDataFormat.IMAGE, "max_dim_x": IMAGE_MAX, "max_dim_y": IMAGE_MAX}
    return {}
