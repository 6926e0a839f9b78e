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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from tango_dranspose.core.events import StreamData, frame_buffer


class ParseError(ValueError):
    """A message that does not follow its protocol; the text says what is wrong."""


class MessageModel(BaseModel):
    """Base of all upstream message models: keeps fields we do not model as attributes."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


MAX_JSON_DEPTH = 64
"""JSON nested deeper than this is refused: no detector nests more than a few levels, and
whatever reads the decoded value (pydantic, ``json.dumps``, ``repr``) recurses."""


def decode_json(raw: bytes, what: str = "message") -> Any:
    """Decode JSON text, or raise :class:`ParseError` naming ``what``: also for numbers with
    too many digits and for nesting deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ParseError(f"{what} is JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ParseError(f"{what} is not valid JSON: {exc}") from None
    # Fewer brackets than the limit cannot nest deeper than it: the common case costs two
    # byte counts at C speed.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _nested_deeper(value, MAX_JSON_DEPTH):
        raise ParseError(f"{what} is JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _nested_deeper(value: Any, limit: int) -> bool:
    if not isinstance(value, dict | list):
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def load_json(frame: Any, what: str = "message") -> dict[str, Any]:
    """Decode one JSON object frame, or raise :class:`ParseError` naming ``what``."""
    try:
        raw = bytes(frame_buffer(frame))
    except TypeError as exc:
        raise ParseError(f"{what}: {exc}") from None
    value = decode_json(raw, what)
    if not isinstance(value, dict):
        raise ParseError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def first_json(message: Sequence[Any]) -> dict[str, Any]:
    """The first frame of ``message`` as a JSON object, ``{}`` if it is none; for ``detect``,
    which must not raise on whatever a file holds."""
    try:
        return load_json(message[0])
    except (ParseError, IndexError):
        return {}


_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
_V = TypeVar("_V")
_K = TypeVar("_K")


def validation_problems(exc: ValidationError) -> str:
    """Pydantic's errors on one line, ``loc: msg; loc: msg``, to name every bad field at once."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
    )


@overload
def validate(model: type[_M], obj: Any, what: str) -> _M: ...
@overload
def validate(model: TypeAdapter[_T], obj: Any, what: str) -> _T: ...
def validate(model: type[BaseModel] | TypeAdapter[Any], obj: Any, what: str) -> Any:
    """``obj`` as ``model`` (a model class or a type adapter), or ``ParseError("invalid
    {what}: ...")``: callers catch only ParseError, never pydantic's own error."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(obj)
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ParseError(f"invalid {what}: {validation_problems(exc)}") from None


def lookup(table: Mapping[str, _V], value: object) -> _V | None:
    """``table[value]`` when ``value`` is one of its string keys, else None.

    Upstream values can be anything JSON or a pickle holds; an unhashable one (a list) would
    make a plain ``table.get`` raise.
    """
    return table.get(value) if isinstance(value, str) else None


def dispatch(
    obj: Mapping[str, Any], key: str, table: Mapping[str, tuple[type[_M], _K]], what: str
) -> tuple[_M, _K]:
    """Validate ``obj`` with the model its ``key`` field selects in ``table``; also returns the
    table's second column (the event kind). ``what`` names the protocol in errors."""
    value = obj.get(key)
    entry = lookup(table, value)
    if entry is None:
        raise ParseError(f"{what} {key} must be one of {', '.join(table)}, got {value!r}")
    model, kind = entry
    return validate(model, obj, f"{what} {value} message"), kind


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


MAX_REASON_LENGTH = 120
MAX_REASONS = 64
OTHER_REASONS = "other reasons (too many different ones to count apart)"


@dataclass
class DropCounter:
    """Messages a framer dropped, by reason, each with the first sample seen.

    Reasons may quote upstream values (``unknown htype 'x'``): they are cut to
    :data:`MAX_REASON_LENGTH` characters and, past :data:`MAX_REASONS` different ones, counted
    together under :data:`OTHER_REASONS`, so that an upstream sending ever new garbage can
    neither grow this table nor flood the log without bound.
    """

    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, sample: object = None, n: int = 1) -> bool:
        """Count a drop; returns True when this reason is new (worth one log line)."""
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 3] + "..."
        if reason not in self.counts and len(self.counts) >= MAX_REASONS:
            reason = OTHER_REASONS
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
    if not isinstance(sample, bytes | bytearray | memoryview) and hasattr(sample, "buffer"):
        sample = sample.buffer  # a zero-copy ZeroMQ frame
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

    def forward(self, kind: Kind, frames: Sequence[Any]) -> list[Framed]:
        """``frames`` as one event of ``kind``, if the scan window lets it through."""
        if not self.gate(kind, frames):
            return []
        return [Framed(kind, StreamData(self.typ, list(frames)))]

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


class SingleFrameFramer(Framer):
    """A framer for protocols whose every message is one self-contained frame.

    Subclasses implement :meth:`feed_frame`; multi-frame messages and the :class:`ParseError`
    it raises are dropped here, so that all such protocols count them under the same reasons.
    """

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if len(message) != 1:
            return self.drop("not a single-frame message", message)
        try:
            return self.feed_frame(message[0])
        except ParseError as exc:
            return self.drop("malformed message", str(exc))

    @abstractmethod
    def feed_frame(self, frame: Any) -> list[Framed]:
        """The events of one message's frame; raises :class:`ParseError` when it is malformed
        (other drops it counts itself, under their own reasons)."""


class JsonHeadFramer(Framer):
    """A framer for multipart protocols whose first part is a JSON object naming the message
    in its ``htype``; each message is forwarded whole, as one event, once :meth:`check` passes.
    """

    kinds: ClassVar[Mapping[str, Kind]]
    """The event kind of each ``htype``; other htypes are dropped."""
    what: ClassVar[str]
    """The head as named in errors (``"STINS message"``)."""
    not_json: ClassVar[str] = "first part is not a JSON object"
    """The drop reason for a message whose head is not JSON, in the protocol's own words."""

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if not message:
            return self.drop("empty message")
        try:
            head = load_json(message[0], self.what)
        except ParseError:
            return self.drop(self.not_json, message)
        htype = head.get("htype")
        kind = lookup(self.kinds, htype)
        if kind is None:
            return self.drop(f"unknown htype {htype!r}", message)
        try:
            self.check(kind, head, message)
        except ParseError as exc:
            return self.drop(f"invalid {htype} message", str(exc))
        return self.forward(kind, message)

    @abstractmethod
    def check(self, kind: Kind, head: dict[str, Any], message: Sequence[Any]) -> None:
        """Raise :class:`ParseError` when ``message`` (its first part decoded: ``head``) is bad."""


def _error_sample(exc: Exception, message: object = None) -> str:
    """What an unexpected framer error leaves in the drop sample: the error and the start of
    the message. Building it must not fail, whatever the exception or the message hold."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() raises
        text = type(exc).__name__
    if message is not None:
        text = f"{text[:120]}; message: {_sample_text(message, 60)}"
    return text


def safe_feed(framer: Framer, message: Sequence[Any]) -> list[Framed]:
    """``framer.feed(message)``, with any exception it raises counted as a drop.

    Framers do not raise on bad input; this is the second line of defence, for the bug that
    would otherwise stop an ingester on one bad message. The drop's reason is
    ``framer error: <ExceptionType>`` (its sample the error text and the message's start),
    through :meth:`Framer.drop`, so the first one of each type is logged. ``BaseException``
    (cancellation, KeyboardInterrupt) still propagates.
    """
    try:
        return framer.feed(message)
    except Exception as exc:
        return framer.drop(f"framer error: {type(exc).__name__}", _error_sample(exc, message))


def safe_flush(framer: Framer) -> list[Framed]:
    """``framer.flush()``, with any exception it raises counted as a drop (see
    :func:`safe_feed`)."""
    try:
        return framer.flush()
    except Exception as exc:
        return framer.drop(f"framer error: {type(exc).__name__}", _error_sample(exc))


@dataclass(frozen=True)
class Protocol:
    """A protocol module's entry in the registry."""

    typ: str
    framer: type[Framer]
    parse: Callable[[StreamData], Any]
    description: str
