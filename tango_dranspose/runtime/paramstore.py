"""The pipeline's parameters: current values, their versions, and where each version applies.

Every change makes a new version (a number that only grows, and the content hash of the whole
set). A change made while a scan runs applies from a defined event: the first event not yet
assigned when the change arrived. Events before it keep the version they were assigned with;
every worker switches at that same event (each processes its events in order), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tango_dranspose.core.parameters import (
    ParameterBase,
    ParameterError,
    ParameterList,
    ParameterSet,
)


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
        """Raise ParameterError unless ``raw`` is a valid value of a described parameter."""
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
