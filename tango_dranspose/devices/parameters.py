"""The payloads' parameters as writable attributes of the controller.

Each parameter a worker or reducer payload describes becomes ``param_<name>`` with the Tango
type of its description (str, int64, float, bool; a binary parameter is DevEncoded, a file
parameter a path the controller reads when written). Written values are memorized: Tango keeps
the last one in the DB (the ``__value`` attribute property, which dsconfig leaves alone), and the
controller applies it again when the attribute reappears after a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tango
from tango import AttrWriteType
from tango.server import attribute

from tango_dranspose.core.parameters import ParameterBase, ParameterError
from tango_dranspose.core.publishview import base_name

PREFIX = "param_"
_TANGO = {"str": str, "int": "int64", "float": float, "bool": bool, "file": str}


def attribute_name(parameter: str) -> str:
    return f"{PREFIX}{base_name(parameter)}"


def typed(desc: ParameterBase, raw: bytes) -> Any:
    """The attribute value of a raw parameter value."""
    if desc.dtype == "binary":  # type: ignore[attr-defined]
        return ("raw", raw)
    if desc.dtype == "file":  # type: ignore[attr-defined]
        return f"<{len(raw)} bytes>"
    return desc.from_bytes(raw)


def raw_value(desc: ParameterBase, value: Any) -> bytes:
    """The raw bytes of a written attribute value; raises ParameterError saying why not."""
    dtype = desc.dtype  # type: ignore[attr-defined]
    if dtype == "binary":
        _format, data = value
        return bytes(data) if not isinstance(data, str) else data.encode()
    if dtype == "file":
        try:
            return Path(str(value)).read_bytes()
        except OSError as exc:
            raise ParameterError(
                f"parameter {desc.name!r}: cannot read {value}: {exc.strerror or exc}"
            ) from None
    if dtype == "bool":
        return b"True" if bool(value) else b"False"
    if dtype == "float":
        return json.dumps(float(value)).encode()
    if dtype == "int":
        return str(int(value)).encode()
    return str(value).encode()


def make_attribute(desc: ParameterBase, fget: Any, fset: Any) -> attribute:
    dtype = desc.dtype  # type: ignore[attr-defined]
    default = desc.default_value()
    doc = desc.description or f"payload parameter {desc.name}"
    if dtype not in ("binary", "file") and default is not None:
        doc += f" (default {default!r})"
    if dtype == "file":
        doc += "; write a path: the controller reads the file and sends its content"
    return attribute(
        name=attribute_name(desc.name),
        dtype=tango.DevEncoded if dtype == "binary" else _TANGO.get(dtype, str),
        access=AttrWriteType.READ_WRITE,
        fget=fget,
        fset=fset,
        label=desc.name,
        doc=doc,
        memorized=True,
    )


def memorized_value(device: str, attr: str) -> str | None:
    """The value Tango memorized for ``attr`` of ``device`` (None when there is none)."""
    props = tango.Database().get_device_attribute_property(device, [attr])
    values = props.get(attr, {}).get("__value")
    return str(values[0]) if values else None


def from_memorized(desc: ParameterBase, text: str) -> bytes:
    dtype = desc.dtype  # type: ignore[attr-defined]
    if dtype == "bool":
        return b"True" if text.strip().lower() in ("1", "true") else b"False"
    return text.encode()
