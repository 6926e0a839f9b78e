"""Payload parameters: descriptions, typed values from raw bytes, parameter sets with a hash.

Payloads describe parameters with ``describe_parameters()`` and receive a dict of
:class:`WorkParameter` (``.value`` typed, ``.data`` raw bytes). The hash of a set depends only
on its content, so writing the same value again does not make results look different.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cbor2
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class ParameterError(ValueError):
    """A parameter value or file that cannot be used; the text names the parameter."""


class ParameterBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None

    def from_bytes(self, data: bytes) -> Any:
        return data

    def to_bytes(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        return str(value).encode()

    def default_value(self) -> Any:
        return getattr(self, "default", None)


class StrParameter(ParameterBase):
    dtype: Literal["str"] = "str"
    default: str = ""

    def from_bytes(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParameterError(f"parameter {self.name!r}: not valid UTF-8 text") from None


class BinaryParameter(ParameterBase):
    dtype: Literal["binary"] = "binary"
    default: bytes = b""

    def from_bytes(self, data: bytes) -> bytes:
        return data


class FileParameter(BinaryParameter):
    """Older dranspose payloads call a binary parameter a file parameter."""

    dtype: Literal["file"] = "file"  # type: ignore[assignment]


class IntParameter(ParameterBase):
    dtype: Literal["int"] = "int"
    default: int = 0

    def from_bytes(self, data: bytes) -> int:
        try:
            return int(data.decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise ParameterError(
                f"parameter {self.name!r} takes an integer, got {data[:40]!r}"
            ) from None


class FloatParameter(ParameterBase):
    dtype: Literal["float"] = "float"
    default: float = 0.0

    def from_bytes(self, data: bytes) -> float:
        try:
            return float(data.decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise ParameterError(
                f"parameter {self.name!r} takes a number, got {data[:40]!r}"
            ) from None


class BoolParameter(ParameterBase):
    dtype: Literal["bool"] = "bool"
    default: bool = False

    def from_bytes(self, data: bytes) -> bool:
        # dranspose's rule: exactly the text "True" is true.
        return data == b"True"

    def to_bytes(self, value: Any) -> bytes:
        return b"True" if value is True or value == b"True" or value == "True" else b"False"


ParameterType = Annotated[
    StrParameter | BinaryParameter | FileParameter | IntParameter | FloatParameter | BoolParameter,
    Field(discriminator="dtype"),
]
Parameter: TypeAdapter[ParameterBase] = TypeAdapter(ParameterType)
ParameterList: TypeAdapter[list[ParameterBase]] = TypeAdapter(list[ParameterType])  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class WorkParameter:
    """What payloads receive per parameter: typed ``value`` and raw ``data``."""

    name: str
    value: Any
    data: bytes
    description: ParameterBase | None = None


def describe(descriptions: Iterable[Any]) -> dict[str, ParameterBase]:
    """Normalise what ``describe_parameters()`` returned (models or dicts)."""
    found: dict[str, ParameterBase] = {}
    for item in descriptions:
        if isinstance(item, ParameterBase):
            desc = item
        elif hasattr(item, "model_dump"):
            desc = Parameter.validate_python(item.model_dump())
        else:
            try:
                desc = Parameter.validate_python(item)
            except ValidationError as exc:
                raise ParameterError(f"invalid parameter description {item!r}: {exc}") from None
        found[desc.name] = desc
    return found


class ParameterSet:
    """Raw values by name, typed through the descriptions; immutable once built."""

    def __init__(
        self,
        descriptions: Mapping[str, ParameterBase] | None = None,
        raw: Mapping[str, bytes] | None = None,
    ) -> None:
        self.descriptions = dict(descriptions or {})
        self.raw: dict[str, bytes] = {}
        values: dict[str, WorkParameter] = {}
        for name, desc in self.descriptions.items():
            data = desc.to_bytes(desc.default_value())
            values[name] = WorkParameter(name, desc.default_value(), data, desc)
        for name, data in (raw or {}).items():
            data = bytes(data)
            known = self.descriptions.get(name)
            value = known.from_bytes(data) if known is not None else None
            values[name] = WorkParameter(name, value, data, known)
            self.raw[name] = data
        self.values = values
        digest = hashlib.sha256()
        for name in sorted(values):
            digest.update(name.encode() + b"\0" + values[name].data + b"\0")
        self.hash = digest.hexdigest()[:16]

    def as_dict(self) -> dict[str, WorkParameter]:
        return dict(self.values)

    def unknown(self) -> list[str]:
        """Names that were given a value but that no payload describes."""
        return sorted(n for n in self.raw if n not in self.descriptions)


def load_parameter_file(path: str | Path, *, trust_pickle: bool = False) -> dict[str, bytes]:
    """Read ``[{"name": ..., "data": ...}]`` as JSON, CBOR or (trusted only) pickle."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read parameter file {path}: {exc.strerror}") from None
    items: Any
    if path.suffix in (".pkl", ".pickle"):
        if not trust_pickle:
            raise ParameterError(
                f"{path} is a pickle; loading it can run code. Pass --trust-pickle if you "
                "trust where it comes from, or convert it to JSON"
            )
        import pickle

        items = pickle.loads(blob)  # trusted: explicitly requested by the user
    elif path.suffix == ".cbor":
        try:
            items = cbor2.loads(blob)
        except cbor2.CBORDecodeError as exc:
            raise ParameterError(f"{path}: not valid CBOR: {exc}") from None
    else:
        try:
            items = json.loads(blob)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ParameterError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(items, Mapping):
        items = [{"name": k, "data": v} for k, v in items.items()]
    if not isinstance(items, list):
        raise ParameterError(f'{path}: expected a list of {{"name": ..., "data": ...}} entries')
    out: dict[str, bytes] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "name" not in item or "data" not in item:
            raise ParameterError(f'{path} entry {i}: needs "name" and "data", got {item!r}')
        data = item["data"]
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, bytes | bytearray):
            data = json.dumps(data).encode()
        out[str(item["name"])] = bytes(data)
    return out
