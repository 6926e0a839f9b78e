"""What every protocol module shares: message models, parse errors, framers, drop counting.

A protocol module (one per upstream protocol) is pure: no sockets, no files. It offers

* typed message models (pydantic, unknown upstream fields kept as attributes),
* ``parse(stream_data)`` turning one event's frames into one model, as payloads call it,
* a :class:`Framer` that turns upstream messages into per-event :class:`StreamData`,
  dropping (and counting, with a reason) whatever does not belong to a scan,
* ``build_*`` helpers producing valid upstream messages, for simulators and tests.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tango_dranspose.core.events import StreamData, frame_buffer


class ParseError(ValueError):
    """A message that does not follow its protocol; the text says what is wrong."""


class MessageModel(BaseModel):
    """Base of all upstream message models: keeps fields we do not model as attributes."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


def load_json(frame: Any, what: str = "message") -> dict[str, Any]:
    """Decode one JSON object frame, or raise :class:`ParseError` naming ``what``."""
    try:
        value = json.loads(bytes(frame_buffer(frame)))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"{what} is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise ParseError(f"{what}: {exc}") from None
    if not isinstance(value, dict):
        raise ParseError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def expect_typ(data: StreamData, *typs: str) -> None:
    if data.typ not in typs:
        raise ParseError(f"expected stream data of type {' or '.join(typs)}, got {data.typ!r}")


def expect_frames(data: StreamData, count: int, what: str) -> None:
    if data.length < count:
        raise ParseError(f"{what} needs {count} frames, got {data.length}")


class Kind(enum.Enum):
    START = "start"
    DATA = "data"
    END = "end"


@dataclass(slots=True)
class Framed:
    """One event's worth of one stream, as a framer cut it from the upstream."""

    kind: Kind
    data: StreamData


@dataclass
class DropCounter:
    """Messages a framer dropped, by reason, each with the first sample seen."""

    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, sample: object = None, n: int = 1) -> bool:
        """Count a drop; returns True when this reason is new (worth one log line)."""
        first = reason not in self.counts
        self.counts[reason] = self.counts.get(reason, 0) + n
        if first:
            self.samples[reason] = _sample_text(sample)
        return first

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: DropCounter) -> None:
        for reason, n in other.counts.items():
            self.add(reason, other.samples.get(reason), n)


def _sample_text(sample: object, limit: int = 200) -> str:
    if isinstance(sample, list | tuple) and sample:
        sample = sample[0]
    try:
        if isinstance(sample, bytes | bytearray | memoryview):
            raw = bytes(sample[:limit])
            text = raw.decode("utf-8", "backslashreplace")
        else:
            text = repr(sample)
    except Exception:  # a sample is only for humans; never fail on it
        text = f"<{type(sample).__name__}>"
    return text[:limit]


class Framer(ABC):
    """Cuts one stream's upstream messages into events; one instance per stream and scan.

    ``feed`` takes one upstream message (its multipart frames, or a chunk of bytes for
    byte-stream protocols) and returns the events it completes: nothing before the start
    message, the start as ``Kind.START`` (event 0), one ``Kind.DATA`` per data message (or per
    row, for vectorised protocols), ``Kind.END`` once. Everything else is counted in ``drops``.
    Framers never raise on bad input.
    """

    typ: ClassVar[str]

    def __init__(self) -> None:
        self.started = False
        self.ended = False
        self.drops = DropCounter()
        self.on_new_drop: Callable[[str, str], None] | None = None

    def reset(self) -> None:
        """Forget the previous scan; the next start message begins a new one."""
        self.started = False
        self.ended = False

    @abstractmethod
    def feed(self, message: Sequence[Any]) -> list[Framed]: ...

    def flush(self) -> list[Framed]:
        """Events still held back when the upstream ends (most framers hold none)."""
        return []

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        """Whether ``message`` looks like this protocol's start message (for sniffing files)."""
        return False

    def drop(self, reason: str, sample: object = None) -> list[Framed]:
        if self.drops.add(reason, sample) and self.on_new_drop is not None:
            self.on_new_drop(reason, self.drops.samples[reason])
        return []

    def gate(self, kind: Kind, sample: object) -> bool:
        """Apply the scan window: True when a message of ``kind`` belongs to the scan."""
        if kind is Kind.START:
            if self.started and not self.ended:
                self.drop("start message inside a running scan", sample)
                return False
            self.started, self.ended = True, False
            return True
        if not self.started:
            self.drop("before the start message", sample)
            return False
        if self.ended:
            self.drop("after the end message", sample)
            return False
        if kind is Kind.END:
            self.ended = True
        return True


@dataclass(frozen=True)
class Protocol:
    """A protocol module's entry in the registry."""

    typ: str
    framer: type[Framer]
    parse: Callable[[StreamData], Any]
    description: str
