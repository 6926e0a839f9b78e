"""LeCroy oscilloscope (MAUI) via its Tango device over ZMQ SUB, typ ``lecroy``.

Upstream messages:

* control, one JSON part ``{"htype": "msg", "what": w, "frame"}``: ``what`` 0 = prepare, 1 =
  sequence start (adds ``ntriggers`` (-1 = continuous), ``seqno``, ``channels``), 2 = sequence
  end, 3 = stop (adds ``frames``);
* traces, 3 parts: JSON ``{"htype": "traces", "ch", "ts", "frame", "shape": [ntriggers or 1,
  samples], "dtype": "float64", "horiz_offset", "horiz_interval"}``, the raw waveforms, and a
  **pickled** list of trigger timestamps (loaded only with
  :func:`~tango_dranspose.core.safepickle.restricted_loads`).

Events: START = ``[prepare]``; one DATA per sequence = ``[seq-start, (meta, data, ts) per
trace, ..., seq-end]``; END = ``[stop]``. In continuous mode (``ntriggers == -1``) the scope
sends its sequence start once and then only traces and sequence ends, so the framer repeats the
last sequence start at the head of every following sequence. A sequence without traces is
dropped, as is one cut off by the stop.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData, frame_buffer
from tango_dranspose.core.safepickle import UnsafePickleError, restricted_loads
from tango_dranspose.streams import codecs
from tango_dranspose.streams.base import (
    Framed,
    Framer,
    Kind,
    MessageModel,
    ParseError,
    Protocol,
    expect_frames,
    expect_typ,
    load_json,
    validate,
)

TYP = "lecroy"
DRANSPOSE_TYP = "lecroy_9fwdWp6Rq7"
"""The tag dranspose's LeCroy ingester gives its events: found in its dumps, accepted."""

PREPARE, SEQ_START, SEQ_END, STOP = 0, 1, 2, 3
CONTINUOUS = -1


class LecroyMessage(MessageModel):
    htype: Literal["msg"]
    what: int
    frame: int


class LecroyPrepare(LecroyMessage):
    what: Literal[0]


class LecroySeqStart(LecroyMessage):
    what: Literal[1]
    ntriggers: int
    seqno: int
    channels: list[int]


class LecroySeqEnd(LecroyMessage):
    what: Literal[2]


class LecroyEnd(LecroyMessage):
    what: Literal[3]
    frames: int | None = None


class LecroyData(MessageModel):
    """The JSON part of one trace."""

    htype: Literal["traces"]
    ch: int
    ts: float
    frame: int
    shape: list[int]
    dtype: str
    horiz_offset: float
    horiz_interval: float


class LecroyParsed(LecroySeqStart):
    """One sequence: its sequence start's fields and, per trace, meta, waveforms, timestamps.

    A subclass of :class:`LecroySeqStart`, as in dranspose.
    """

    meta: list[LecroyData] = Field(default_factory=list)
    data: list[np.ndarray] = Field(default_factory=list)
    """Per trace, the waveforms ``(ntriggers or 1, samples)``, viewing the received frame."""
    timestamps: list[list[float]] = Field(default_factory=list)
    """Per trace, the trigger timestamps (s)."""

    @property
    def continuous(self) -> bool:
        return self.ntriggers == CONTINUOUS


LecroyControl = LecroyPrepare | LecroySeqStart | LecroySeqEnd | LecroyEnd
LecroyResult = LecroyPrepare | LecroySeqStart | LecroySeqEnd | LecroyEnd | LecroyParsed
LecroyPacket: TypeAdapter[LecroyResult | LecroyData] = TypeAdapter(
    LecroyPrepare | LecroySeqStart | LecroySeqEnd | LecroyEnd | LecroyData | LecroyParsed
)
"""Validates a decoded LeCroy JSON part into the matching model (dranspose's name)."""

_CONTROL: dict[int, type[LecroyControl]] = {
    PREPARE: LecroyPrepare,
    SEQ_START: LecroySeqStart,
    SEQ_END: LecroySeqEnd,
    STOP: LecroyEnd,
}


def _control(head: dict[str, Any]) -> LecroyControl:
    if head.get("htype") != "msg":
        raise ParseError(f"expected a LeCroy control message, got htype {head.get('htype')!r}")
    what = head.get("what")
    model = _CONTROL.get(what) if isinstance(what, int) and not isinstance(what, bool) else None
    if model is None:
        raise ParseError(f"LeCroy control 'what' must be 0..3, got {what!r}")
    return validate(model, head, "LeCroy control message")


def parse_control(frame: Any) -> LecroyControl:
    """One control message (prepare, sequence start/end, stop)."""
    return _control(load_json(frame, "LeCroy control message"))


def parse_trace(frames: Sequence[Any]) -> tuple[LecroyData, np.ndarray, list[float]]:
    """One trace's 3 parts: its meta, its waveforms (no copy) and its trigger timestamps."""
    meta = validate(LecroyData, load_json(frames[0], "LeCroy trace meta"), "LeCroy trace meta")
    what = f"LeCroy trace {meta.frame} (channel {meta.ch})"
    waveforms = codecs.as_array(frames[1], meta.dtype, meta.shape, what)
    try:
        stamps = restricted_loads(frame_buffer(frames[2]))
    except UnsafePickleError as exc:
        raise ParseError(f"{what} timestamps: {exc}") from None
    except (pickle.UnpicklingError, TypeError) as exc:
        raise ParseError(f"{what} timestamps are not a valid pickle: {exc}") from None
    if isinstance(stamps, np.ndarray) and stamps.ndim == 1:
        stamps = stamps.tolist()  # dranspose passes on whatever was pickled; so do we
    if not isinstance(stamps, list | tuple) or not all(
        isinstance(t, int | float | np.number) and not isinstance(t, bool) for t in stamps
    ):
        raise ParseError(f"{what} timestamps must be a list of numbers")
    try:
        seconds = [float(t) for t in stamps]
    except (OverflowError, TypeError, ValueError):  # an int beyond float, a complex
        raise ParseError(f"{what} timestamps must be real numbers of seconds") from None
    return meta, waveforms, seconds


def parse(data: StreamData) -> LecroyResult:
    """A LeCroy event: :class:`LecroyPrepare`, :class:`LecroyParsed` (one sequence) or
    :class:`LecroyEnd` (a lone control message parses as its own model)."""
    expect_typ(data, TYP, DRANSPOSE_TYP, "Lecroy")
    expect_frames(data, 1, "a LeCroy message")
    if data.length == 1:
        return parse_control(data.frames[0])
    if (data.length - 2) % 3 or data.length < 5:
        raise ParseError(
            "a LeCroy sequence is [seq-start, 3 parts per trace..., seq-end], "
            f"got {data.length} frames"
        )
    start = parse_control(data.frames[0])
    if not isinstance(start, LecroySeqStart):
        raise ParseError(
            f"a LeCroy sequence must begin with a sequence start, got what={start.what}"
        )
    end = parse_control(data.frames[-1])
    if not isinstance(end, LecroySeqEnd):
        raise ParseError(f"a LeCroy sequence must end with a sequence end, got what={end.what}")
    parsed = LecroyParsed(**start.model_dump())
    for index in range(1, data.length - 1, 3):
        meta, waveforms, stamps = parse_trace(data.frames[index : index + 3])
        parsed.meta.append(meta)
        parsed.data.append(waveforms)
        parsed.timestamps.append(stamps)
    return parsed


class LecroyFramer(Framer):
    """Groups each sequence into one event; repeats the sequence start in continuous mode."""

    typ = TYP

    def __init__(self) -> None:
        super().__init__()
        self._seq_start: Any = None  # the frame of the last sequence start
        self._continuous = False
        self._open: list[Any] | None = None  # frames of the sequence being collected

    def reset(self) -> None:
        super().reset()
        self._seq_start, self._continuous, self._open = None, False, None

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if len(message) == 3:
            return self._trace(list(message))
        if len(message) != 1:
            return self.drop(f"message with {len(message)} parts", message)
        part = message[0]
        try:
            control = parse_control(part)
        except ParseError as exc:
            return self.drop("invalid control message", str(exc))
        if isinstance(control, LecroyPrepare):
            self._abandon("sequence not ended before the next prepare")
            self._seq_start, self._continuous = None, False
            return self.forward(Kind.START, [part])
        if isinstance(control, LecroyEnd):
            self._abandon("sequence not ended before the stop")
            return self.forward(Kind.END, [part])
        if not self.gate(Kind.DATA, part):
            return []
        if isinstance(control, LecroySeqStart):
            self._abandon("sequence not ended before the next sequence start")
            self._seq_start, self._continuous = part, control.ntriggers == CONTINUOUS
            self._open = [part]
            return []
        frames, self._open = self._open, None
        if frames is None or len(frames) < 4:
            return self.drop("sequence end without traces", part)
        return [Framed(Kind.DATA, StreamData(TYP, [*frames, part]))]

    def _trace(self, frames: list[Any]) -> list[Framed]:
        try:
            parse_trace(frames)
        except ParseError as exc:
            return self.drop("invalid trace message", str(exc))
        if not self.gate(Kind.DATA, frames):
            return []
        if self._open is None:
            if self._seq_start is None or not self._continuous:
                return self.drop("trace outside a sequence", frames)
            self._open = [self._seq_start]
        self._open.extend(frames)
        return []

    def _abandon(self, reason: str) -> None:
        frames, self._open = self._open, None
        if frames is not None and len(frames) > 1:
            self.drop(reason, frames)

    def flush(self) -> list[Framed]:
        self._abandon("sequence not ended when the stream stopped")
        return []

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        try:
            return isinstance(parse_control(message[0]), LecroyPrepare) and len(message) == 1
        except (ParseError, IndexError):
            return False


# -- building messages (simulators and tests) -----------------------------------------------


def _json(value: dict[str, Any]) -> list[bytes]:
    return [json.dumps(value).encode()]


def build_prepare(frame: int = 0) -> list[bytes]:
    return _json({"htype": "msg", "what": PREPARE, "frame": frame})


def build_seq_start(frame: int, ntriggers: int, seqno: int, channels: Sequence[int]) -> list[bytes]:
    return _json(
        {
            "htype": "msg",
            "what": SEQ_START,
            "frame": frame,
            "ntriggers": ntriggers,
            "seqno": seqno,
            "channels": list(channels),
        }
    )


def build_seq_end(frame: int) -> list[bytes]:
    return _json({"htype": "msg", "what": SEQ_END, "frame": frame})


def build_stop(frame: int, frames: int | None = None) -> list[bytes]:
    return _json({"htype": "msg", "what": STOP, "frame": frame, "frames": frames or frame})


def build_trace(
    ch: int,
    waveforms: np.ndarray,
    frame: int,
    ts: float,
    timestamps: Sequence[float],
    horiz_offset: float = -1e-7,
    horiz_interval: float = 1.25e-11,
) -> list[bytes]:
    """One trace message of ``waveforms`` ``(ntriggers or 1, samples)``: 3 parts."""
    data = np.ascontiguousarray(waveforms, dtype=np.float64)
    head = {
        "htype": "traces",
        "ch": ch,
        "ts": ts,
        "frame": frame,
        "shape": list(data.shape),
        "horiz_offset": horiz_offset,
        "horiz_interval": horiz_interval,
        "dtype": data.dtype.name,
    }
    # Producing a pickle is harmless; only loading one is restricted.
    return [*_json(head), data.tobytes(), pickle.dumps([float(t) for t in timestamps], protocol=4)]


def build_run(
    sequences: int = 2,
    channels: Sequence[int] = (2, 4),
    ntriggers: int = CONTINUOUS,
    samples: int = 1000,
    seed: int = 0,
    t0: float = 1.7e9,
) -> list[list[bytes]]:
    """Every upstream message of one acquisition, as the scope sends them.

    Continuous mode (``ntriggers=-1``) sends the sequence start only once, like the scope.
    """
    rng = np.random.default_rng(seed)
    rows = 1 if ntriggers == CONTINUOUS else ntriggers
    messages = [build_prepare(0)]
    frame = 0
    for seqno in range(sequences):
        if seqno == 0 or ntriggers != CONTINUOUS:
            messages.append(build_seq_start(frame, ntriggers, seqno, channels))
        ts = t0 + seqno
        stamps = [ts + i * 1e-3 for i in range(rows)]
        for ch in channels:
            waveforms = rng.normal(0.0, 1e-3, (rows, samples))
            messages.append(build_trace(ch, waveforms, frame, ts, stamps))
            frame += 1
        messages.append(build_seq_end(frame))
    messages.append(build_stop(frame, frame))
    return messages


PROTOCOL = Protocol(
    typ=TYP,
    framer=LecroyFramer,
    parse=parse,
    description="LeCroy oscilloscope: control messages and 3-part traces, one event per sequence",
)

__all__ = [
    "CONTINUOUS",
    "PROTOCOL",
    "TYP",
    "LecroyControl",
    "LecroyData",
    "LecroyEnd",
    "LecroyFramer",
    "LecroyMessage",
    "LecroyPacket",
    "LecroyParsed",
    "LecroyPrepare",
    "LecroyResult",
    "LecroySeqEnd",
    "LecroySeqStart",
    "build_prepare",
    "build_run",
    "build_seq_end",
    "build_seq_start",
    "build_stop",
    "build_trace",
    "parse",
    "parse_control",
    "parse_trace",
]
