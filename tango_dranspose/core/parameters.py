"""Payload parameters: descriptions, typed values from raw bytes, parameter sets with a hash.

Payloads describe parameters with ``describe_parameters()`` and receive a dict of
:class:`WorkParameter` (``.value`` typed, ``.data`` raw bytes). The hash of a set depends only
on its content, so writing the same value again does not make results look different.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

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
    """dranspose before 0.1 had a ``FileParameter`` (its value the file's text); payloads that
    still name it get a binary parameter (``.value`` bytes)."""

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
    """What payloads receive per parameter: typed ``value`` and raw ``data``.

    ``value`` and ``data`` have defaults because payload test suites build them as dranspose
    allows, ``WorkParameter(name="roi", data=b"[1, 2]")`` (``value`` None as for an undescribed
    parameter).
    """

    name: str
    value: Any = None
    data: bytes = b""
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


# dranspose's newest branch lets a payload declare ``parameter_class``: a pydantic model of
# typed, possibly nested parameters, built as ``Model()`` and patched field by field. Here each
# field is one described parameter (so each stays a typed, versioned controller attribute and a
# single field can be set alone, as dranspose's partial patch does); the payload receives an
# instance of its model built from the parameter set (docs/decisions/0014).


@dataclass(frozen=True, slots=True)
class ModelField:
    """How one field of a parameter model is carried as a parameter."""

    attr: str  # the field's name in the model
    key: str  # the parameter's name: the field's alias if it has one, as the model validates it
    json: bool  # the parameter's text is JSON: the field's type has no scalar parameter
    type_text: str
    description: ParameterBase


def is_parameter_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@functools.cache
def model_fields(model: type[BaseModel]) -> tuple[ModelField, ...]:
    """The parameters a model's fields become; raises ParameterError for an unusable field."""
    found = []
    for attr, info in model.model_fields.items():
        where = f"{model.__name__}.{attr}"
        if info.is_required():
            raise ParameterError(
                f"{where} has no default; parameters must have one (dranspose builds "
                f"{model.__name__}() before any value is set)"
            )
        key = info.alias or attr
        default = info.get_default(call_default_factory=True)
        annotation: Any = info.annotation if info.annotation is not None else Any
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        try:
            schema = adapter.json_schema()
        except Exception:  # arbitrary types have no schema: carried as JSON, checked by the model
            schema = {}
        try:
            plain = adapter.dump_python(default, mode="json")
        except Exception as exc:
            raise ParameterError(
                f"{where}: the default {default!r} has no JSON form: {exc}"
            ) from None
        text = info.description or info.title
        kind = schema.get("type")
        is_json = False
        desc: ParameterBase
        if kind == "boolean":
            desc = BoolParameter(name=key, description=text, default=bool(default))
        elif kind == "integer":
            desc = IntParameter(name=key, description=text, default=plain)
        elif kind == "number":
            desc = FloatParameter(name=key, description=text, default=plain)
        elif kind == "string" and schema.get("format") == "binary":
            desc = BinaryParameter(name=key, description=text, default=default)
        elif kind == "string" and isinstance(plain, str):
            # str and what pydantic reads from text (enums, literals, paths, dates)
            desc = StrParameter(name=key, description=text, default=plain)
        else:
            is_json = True
            note = f"JSON: {_type_text(annotation)}"
            desc = StrParameter(
                name=key,
                description=f"{text} ({note})" if text else note,
                default=json.dumps(plain),
            )
        found.append(ModelField(attr, key, is_json, _type_text(annotation), desc))
    return tuple(found)


def describe_model(model: type[BaseModel]) -> dict[str, ParameterBase]:
    """The parameter descriptions of a ``parameter_class`` model, one per field."""
    return {f.key: f.description for f in model_fields(model)}


def model_from_parameters(model: type[BaseModel], values: Mapping[str, WorkParameter]) -> Any:
    """An instance of ``model`` from a parameter set; fields without a value keep the default."""
    data: dict[str, Any] = {}
    for f in model_fields(model):
        wp = values.get(f.key)
        if wp is None:
            continue
        if f.json:
            try:
                data[f.key] = json.loads(wp.data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ParameterError(
                    f"parameter {f.key!r} takes JSON ({f.type_text}), got {wp.data[:40]!r}: {exc}"
                ) from None
        else:
            # value is None when the set did not know the description (another process's set)
            data[f.key] = wp.value if wp.value is not None else f.description.from_bytes(wp.data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"parameter {'.'.join(str(p) for p in err['loc']) or model.__name__!r}: {err['msg']}"
            for err in exc.errors()
        )
        raise ParameterError(problems) from None


def load_parameter_file(path: str | Path, *, trust_pickle: bool = False) -> dict[str, bytes]:
    """Read ``[{"name": ..., "data": ...}]`` as JSON, CBOR or (trusted only) pickle.

    The format is told by the content, as dranspose does (see :mod:`.paramfiles`).
    """
    # Imported here: paramfiles imports ParameterError from this module.
    from tango_dranspose.core.paramfiles import read_parameter_file

    return read_parameter_file(path, trust_pickle=trust_pickle)
