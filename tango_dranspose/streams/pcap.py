"""PandABox PCAP over ZMQ (typ ``PCAP``), as the PandA Tango device publishes it.

Upstream, each message is one JSON frame: ``series-start`` (with ``arm_time``), ``data``,
``series-end``. A data message is *vectorised*: every list-valued field holds one value per
captured row (all lists of equal length N), scalars apply to every row, and ``frame_number`` is
the number of the first row.

Frames the framer emits, per kind (always one frame):

* ``START``: the series-start frame, unchanged;
* ``DATA``: one event per row: a JSON object with the scalars copied, each list field replaced
  by its row's value and ``frame_number`` set to ``frame_number + i``;
* ``END``: the series-end frame, unchanged.

A data message whose list fields differ in length is dropped whole, with a reason. Payloads read
a row's values as attributes (``row.energy``) or by name (``row["INENC3.VAL.Mean"]``, for
PandA names that are not Python identifiers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData
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
    first_json,
    load_json,
)

TYP = "PCAP"
MAX_ROW_CELLS = 1 << 20
"""The most values (rows x fields) one data message may split into."""


class PCAPStart(MessageModel):
    message_id: int
    version: int
    message_type: Literal["series-start"] = "series-start"
    arm_time: datetime


class PCAPData(MessageModel):
    """One row (as emitted by the framer) or one vectorised upstream message; fields are extras."""

    message_id: int
    version: int
    message_type: Literal["data"] = "data"
    frame_number: int

    @property
    def values(self) -> dict[str, Any]:
        """The captured fields by PandA name (everything but the envelope)."""
        return dict(self.model_extra or {})

    def __getitem__(self, name: str) -> Any:
        try:
            return (self.model_extra or {})[name]
        except KeyError:
            known = ", ".join(self.model_extra or {}) or "none"
            raise KeyError(f"no field {name!r} in this PCAP row; fields: {known}") from None


class PCAPEnd(MessageModel):
    message_id: int
    version: int
    message_type: Literal["series-end"] = "series-end"


PCAPPacketType = PCAPStart | PCAPData | PCAPEnd
PCAPPacket: TypeAdapter[PCAPPacketType] = TypeAdapter(
    Annotated[PCAPPacketType, Field(discriminator="message_type")]
)
"""Validates any PCAP message dict (``PCAPPacket.validate_python(obj)``), as in dranspose."""

_MODELS: dict[str, tuple[type[PCAPPacketType], Kind]] = {
    "series-start": (PCAPStart, Kind.START),
    "data": (PCAPData, Kind.DATA),
    "series-end": (PCAPEnd, Kind.END),
}


def _validate(obj: dict[str, Any]) -> tuple[PCAPPacketType, Kind]:
    return dispatch(obj, "message_type", _MODELS, "PCAP")


def parse(data: StreamData) -> PCAPPacketType:
    """The PCAP message of one event (a start, one row, or an end)."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "a PCAP message")
    return _validate(load_json(data.frames[0], "PCAP message"))[0]


class RowsTooLarge(ParseError):
    """A data message that would split into more than :data:`MAX_ROW_CELLS` values."""


def split_rows(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of one vectorised data message; raises :class:`ParseError` on unequal lengths."""
    first = message.get("frame_number")
    if not isinstance(first, int) or isinstance(first, bool):
        raise ParseError(f"PCAP data message needs an integer frame_number, got {first!r}")
    vectors = {key for key, value in message.items() if isinstance(value, list)}
    lengths = {key: len(message[key]) for key in vectors}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{key}: {n}" for key, n in sorted(lengths.items()))
        raise ParseError(f"PCAP data fields have unequal lengths ({detail})")
    if not vectors:
        return [dict(message)]
    count = next(iter(lengths.values()))
    # Every row repeats the scalars: a message of a few long lists and many scalars would
    # multiply into far more than it holds. Real ones have 4 scalars and a few dozen rows.
    if count * len(message) > MAX_ROW_CELLS:
        raise RowsTooLarge(
            f"PCAP data message of {count} rows of {len(message)} fields is too large to split"
        )
    rows = []
    for i in range(count):
        row = {key: (value[i] if key in vectors else value) for key, value in message.items()}
        row["frame_number"] = first + i
        rows.append(row)
    return rows


class PCAPFramer(SingleFrameFramer):
    """Un-vectorises PCAP data messages: one event per captured row."""

    typ = TYP

    def feed_frame(self, frame: Any) -> list[Framed]:
        obj = load_json(frame, "PCAP message")
        packet, kind = _validate(obj)
        if not isinstance(packet, PCAPData):
            return self.forward(kind, [frame])
        obj["frame_number"] = packet.frame_number  # as validated (an integral float is fine)
        try:
            rows = split_rows(obj)
        except RowsTooLarge as exc:
            return self.drop("data message too large to split into rows", str(exc))
        except ParseError as exc:
            return self.drop("vector fields of unequal length", str(exc))
        if not rows:
            return self.drop("data message without rows", [frame])
        if not self.gate(Kind.DATA, [frame]):
            return []
        # One upstream message of N rows counts as one message in drops and N events here.
        return [Framed(Kind.DATA, StreamData(TYP, [json.dumps(row).encode()])) for row in rows]

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        obj = first_json(message)
        return obj.get("message_type") == "series-start" and "arm_time" in obj


# --- builders, for simulators and tests -------------------------------------------------------


def _frame(obj: Mapping[str, Any]) -> list[bytes]:
    return [json.dumps(obj).encode()]


def build_start(message_id: int = 1, arm_time: datetime | str | None = None) -> list[bytes]:
    """A series-start message (one frame); ``arm_time`` defaults to now."""
    when = arm_time if arm_time is not None else datetime.now(timezone.utc)
    if isinstance(when, datetime):
        when = when.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        when = when.replace("+00:00", "Z")
    return _frame(
        {"message_id": message_id, "message_type": "series-start", "version": 1, "arm_time": when}
    )


def build_data(
    frame_number: int, columns: Mapping[str, Sequence[Any]], message_id: int = 2
) -> list[bytes]:
    """A vectorised data message: ``columns`` maps field name to one value per row."""
    body: dict[str, Any] = {
        "message_id": message_id,
        "message_type": "data",
        "version": 1,
        "frame_number": frame_number,
    }
    body.update({name: list(values) for name, values in columns.items()})
    return _frame(body)


def build_end(message_id: int) -> list[bytes]:
    return _frame({"message_id": message_id, "message_type": "series-end", "version": 1})


def rotation_rows(
    count: int, start: float = 0.0, stop: float = 180.0, inttime: float = 0.1
) -> dict[str, list[float]]:
    """Encoder rows of a stage rotating from ``start`` to ``stop`` degrees at constant speed.

    Columns as the PandA captures them for a continuous rotation: trigger number, integration
    time (ms), the mean encoder angle of each window, and the trigger timestamp (s).
    """
    span = max(count - 1, 1)
    return {
        "triggernumber": [float(i + 1) for i in range(count)],
        "inttime": [inttime * 1000.0] * count,
        "INENC2.VAL.Mean": [start + (stop - start) * i / span for i in range(count)],
        # A little wobble, so that rows are distinguishable beyond their index.
        "PCAP.TS_TRIG.Value": [i * inttime + 1e-4 * math.sin(i) + inttime for i in range(count)],
    }


def build_scan(
    columns: Mapping[str, Sequence[Any]],
    rows_per_message: int = 15,
    arm_time: datetime | str | None = None,
) -> Iterator[list[bytes]]:
    """The upstream messages of a whole acquisition: start, data in chunks, end."""
    total = len(next(iter(columns.values()), []))
    message_id = 1
    yield build_start(message_id, arm_time)
    for first in range(0, total, rows_per_message):
        message_id += 1
        chunk = {name: values[first : first + rows_per_message] for name, values in columns.items()}
        yield build_data(first, chunk, message_id)
    yield build_end(message_id + 1)


PROTOCOL = Protocol(
    typ=TYP,
    framer=PCAPFramer,
    parse=parse,
    description="PandABox PCAP via its Tango device over ZMQ: JSON, vectorised rows",
)
