"""The pipeline's parameters: current values, their versions, and where each version applies.

Every change makes a new version (a number that only grows, and the content hash of the whole
set). A change made while a scan runs applies from a defined event: the first event not yet
assigned when the change arrived. Events before it keep the version they were assigned with;
every worker switches at that same event (each processes its events in order), and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tango_dranspose.core.parameters import (
    BoolParameter,
    ParameterBase,
    ParameterError,
    ParameterList,
    ParameterSet,
    StrParameter,
)
from tango_dranspose.core.paramfiles import loads_json


@dataclass(frozen=True)
class Version:
    number: int
    hash: str
    values: dict[str, bytes]


@dataclass
class Segment:
    """A stretch of a scan computed with one version: from ``from_event`` on."""

    version: Version
    from_event: int = 0
    applied: dict[str, int] = field(default_factory=dict)  # worker -> first event it used

    def describe(self, descriptions: dict[str, ParameterBase]) -> dict[str, Any]:
        return {
            "version": self.version.number,
            "hash": self.version.hash,
            "from_event": self.from_event,
            "values": {
                k: _show(descriptions.get(k), v) for k, v in sorted(self.version.values.items())
            },
            "applied": dict(sorted(self.applied.items())),
        }


def _show(desc: ParameterBase | None, raw: bytes) -> Any:
    if desc is not None and desc.__class__.__name__ in ("BinaryParameter", "FileParameter"):
        return f"<{len(raw)} bytes>"
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return f"<{len(raw)} bytes>"


def json_type(desc: ParameterBase) -> str | None:
    """The type whose JSON a text parameter holds, or None for plain text.

    A field of a payload's ``parameter_class`` that has no scalar parameter (a tuple, a list,
    a nested model) is a text parameter holding JSON, and ``core.parameters.model_fields`` says
    so in its description: ``"TEXT (JSON: TYPE)"``, or ``"JSON: TYPE"`` without a text. The
    store sees descriptions only (the model lives in the worker and reducer processes), so
    that note is what tells it; a default that is not JSON means the note is the payload's own
    prose, and the text stays plain."""
    if not isinstance(desc, StrParameter) or not desc.description:
        return None
    text = desc.description
    if text.startswith("JSON: "):
        kind = text[len("JSON: ") :]
    elif text.endswith(")") and "(JSON: " in text:
        kind = text[text.rindex("(JSON: ") + len("(JSON: ") : -1]
    else:
        return None
    try:
        json.loads(desc.default)
    except ValueError:
        return None
    return kind


class ParameterStore:
    """Descriptions gathered from the payloads; values; the version history."""

    def __init__(self) -> None:
        self.descriptions: dict[str, ParameterBase] = {}
        self.values: dict[str, bytes] = {}
        self.history: list[Version] = []
        self._number = 0
        self._bump()

    @property
    def current(self) -> Version:
        return self.history[-1]

    def describe_from(self, described: list[dict[str, Any]]) -> list[str]:
        """Add the descriptions a component announced; returns the names that are new."""
        new = []
        for desc in ParameterList.validate_python(described):
            if desc.name not in self.descriptions:
                new.append(desc.name)
            self.descriptions[desc.name] = desc
        return new

    def check(self, name: str, raw: bytes) -> None:
        """Raise ParameterError unless ``raw`` is a valid value of a described parameter.

        Every way a value arrives (a Tango attribute write, an Arm, the ZeroMQ client's
        ``parameters``, a memorized value restored) goes through here before it is kept or
        sent: a value no worker could read would otherwise fail every event of every later
        scan, and be memorized for the next restart too."""
        desc = self.descriptions.get(name)
        if desc is None:
            known = ", ".join(sorted(self.descriptions)) or "none"
            raise ParameterError(f"no payload has a parameter {name!r} (parameters: {known})")
        try:
            desc.from_bytes(raw)
        except ParameterError:
            raise
        except ValueError as exc:
            raise ParameterError(f"parameter {name!r}: {exc}") from None
        if isinstance(desc, BoolParameter) and raw not in (b"True", b"False"):
            # dranspose reads anything but "True" as false: "true" or "1" would be a silent no.
            raise ParameterError(f"parameter {name!r} takes True or False, got {raw[:40]!r}")
        kind = json_type(desc)
        if kind is not None:
            try:
                loads_json(raw)
            except ValueError as exc:
                raise ParameterError(
                    f"parameter {name!r} takes JSON ({kind}), got {raw[:40]!r}: {exc}"
                ) from None

    def value_of(self, name: str) -> bytes:
        if name in self.values:
            return self.values[name]
        desc = self.descriptions[name]
        return desc.to_bytes(desc.default_value())

    def update(self, values: dict[str, bytes], *, allow_unknown: bool = False) -> Version | None:
        """Set values (checked first, all or nothing); a new version if anything changed.

        ``allow_unknown`` keeps values no payload describes (dranspose let a scan carry
        any parameter; payloads see them untyped), for arming only."""
        for name, raw in values.items():
            if allow_unknown and name not in self.descriptions:
                continue
            self.check(name, raw)
        changed = {k: v for k, v in values.items() if self.values.get(k) != v}
        if not changed:
            return None
        self.values.update(changed)
        return self._bump()

    def _bump(self) -> Version:
        self._number += 1
        version = Version(
            self._number, ParameterSet(self.descriptions, self.values).hash, dict(self.values)
        )
        self.history.append(version)
        del self.history[:-100]
        return version

    def for_hash(self, phash: str) -> Version | None:
        for version in reversed(self.history):
            if version.hash == phash:
                return version
        return None
