"""Contrast scan software over ZMQ (typ ``contrast``): one pickled dict per message.

Contrast's stream recorder publishes ``send_pyobj`` pickles (protocol 2 for scan messages,
protocol 4 for heartbeats) of dicts or OrderedDicts keyed by ``status``:

* ``heartbeat``: keep-alive, sent every 10 s, also between scans;
* ``started``: ``scannr, path, description, snapshot{motor: position}``;
* ``running``: one per scan point: ``dt`` plus one entry per motor and detector (numbers,
  numpy arrays, dicts of them, or ``{"type": "Link", "filename", "path", "universal"}``);
* ``finished`` (or ``interrupted`` when the scan was stopped): like ``started``.

**Unpickling is restricted to plain data.** A pickle can name any importable callable and have
it run while loading, so these bytes are only ever loaded with
:func:`tango_dranspose.core.safepickle.restricted_loads`, which rebuilds containers, scalars,
strings, datetimes and numpy arrays and refuses everything else (a pickle naming ``os.system`` is a
:class:`ParseError` here and a counted drop in the framer). Even so, connect this protocol only
to a Contrast instance you trust: plain data can still be large.

The framer forwards each message unchanged as one frame: ``START`` the started pickle, ``DATA``
one running pickle, ``END`` the finished (or interrupted) pickle. Heartbeats are skipped and
counted in :attr:`ContrastFramer.heartbeats`, not among the drops: they are not errors.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData, frame_buffer
from tango_dranspose.core.safepickle import UnsafePickleError, restricted_loads
from tango_dranspose.streams.base import (
    Framed,
    Kind,
    MessageModel,
    ParseError,
    Protocol,
    SingleFrameFramer,
    dispatch,
    expect_frames,
    expect_typ,
)

TYP = "contrast"


class ContrastStarted(MessageModel):
    status: Literal["started"] = "started"
    path: str
    scannr: int
    description: str
    snapshot: dict[str, Any] = {}


class ContrastRunning(MessageModel):
    """One scan point; motors and detectors are extra attributes (``msg.sx``, ``msg.panda0``)."""

    status: Literal["running"] = "running"
    dt: float

    @property
    def entries(self) -> dict[str, Any]:
        """Every motor and detector entry of this point, by name."""
        return dict(self.model_extra or {})


class ContrastFinished(MessageModel):
    status: Literal["finished", "interrupted"] = "finished"
    path: str
    scannr: int
    description: str
    snapshot: dict[str, Any] = {}


class ContrastHeartbeat(MessageModel):
    status: Literal["heartbeat"] = "heartbeat"


ContrastPacketType = ContrastStarted | ContrastRunning | ContrastFinished | ContrastHeartbeat
ContrastPacket: TypeAdapter[ContrastPacketType] = TypeAdapter(
    Annotated[ContrastPacketType, Field(discriminator="status")]
)
"""Validates an (already unpickled) Contrast dict: ``ContrastPacket.validate_python(obj)``."""

_MODELS: dict[str, tuple[type[ContrastPacketType], Kind | None]] = {
    "started": (ContrastStarted, Kind.START),
    "running": (ContrastRunning, Kind.DATA),
    "finished": (ContrastFinished, Kind.END),
    "interrupted": (ContrastFinished, Kind.END),
    "heartbeat": (ContrastHeartbeat, None),
}


class RefusedPickle(ParseError):
    """The pickle names something other than plain data; it was not loaded."""


def load(frame: Any) -> dict[str, Any]:
    """Unpickle one frame, plain data only, into a dict; :class:`ParseError` otherwise."""
    try:
        value = restricted_loads(frame_buffer(frame))
    except UnsafePickleError as exc:
        raise RefusedPickle(f"Contrast message rejected: {exc}") from None
    except Exception as exc:
        # Truncated or garbage bytes make the unpickler fail in many ways; all mean "not ours".
        raise ParseError(f"Contrast message is not a valid pickle: {exc!r}") from None
    if not isinstance(value, dict):
        raise ParseError(f"Contrast message must be a pickled dict, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise ParseError("Contrast message keys must be strings")
    return dict(value)


def _validate(obj: dict[str, Any]) -> tuple[ContrastPacketType, Kind | None]:
    return dispatch(obj, "status", _MODELS, "Contrast")


def parse(data: StreamData) -> ContrastPacketType:
    """The Contrast message of one event (loaded as plain data only)."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "a Contrast message")
    return _validate(load(data.frames[0]))[0]


class ContrastFramer(SingleFrameFramer):
    typ = TYP

    def __init__(self) -> None:
        super().__init__()
        self.heartbeats = 0

    def feed_frame(self, frame: Any) -> list[Framed]:
        try:
            obj = load(frame)
        except RefusedPickle as exc:
            return self.drop("pickle refused: not plain data", str(exc))
        _, kind = _validate(obj)
        if kind is None:
            self.heartbeats += 1
            return []
        return self.forward(kind, [frame])

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        try:
            return load(message[0]).get("status") in _MODELS
        except (ParseError, IndexError, TypeError):
            return False


# --- builders, for simulators and tests -------------------------------------------------------


def _pickle(obj: Mapping[str, Any], protocol: int = 2) -> list[bytes]:
    return [pickle.dumps(obj, protocol=protocol)]


def build_heartbeat() -> list[bytes]:
    return _pickle({"status": "heartbeat"}, protocol=4)


def build_started(
    scannr: int, path: str, description: str, snapshot: Mapping[str, float] | None = None
) -> list[bytes]:
    return _pickle(
        {
            "scannr": scannr,
            "status": "started",
            "path": path,
            "snapshot": dict(snapshot or {}),
            "description": description,
        }
    )


def build_running(dt: float, entries: Mapping[str, Any]) -> list[bytes]:
    """One scan point; ``entries`` are motor positions and detector values (numpy allowed)."""
    point: OrderedDict[str, Any] = OrderedDict(entries)
    point["dt"] = dt
    point["status"] = "running"
    return _pickle(point)


def build_finished(
    scannr: int,
    path: str,
    description: str,
    snapshot: Mapping[str, float] | None = None,
    status: Literal["finished", "interrupted"] = "finished",
) -> list[bytes]:
    return _pickle(
        {
            "scannr": scannr,
            "status": status,
            "path": path,
            "snapshot": dict(snapshot or {}),
            "description": description,
        }
    )


PROTOCOL = Protocol(
    typ=TYP,
    framer=ContrastFramer,
    parse=parse,
    description="Contrast scan software over ZMQ: pickled dicts, loaded as plain data only",
)
