"""AlbaEM electrometer over ZMQ (typ ``albaem``).

Upstream, each message is one JSON frame keyed by ``message_type``: ``series-start``, one
``data`` message per trigger (``frame_number``, ``timestamp`` in s, ``acquisition_timestamp`` in
ns, ``channel1``..``channel4`` in A), ``series-end`` (with ``detector_specific`` overflow flags).

The framer forwards each message unchanged as one frame: ``START`` the series-start frame,
``DATA`` one data frame, ``END`` the series-end frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.base import (
    Framed,
    Kind,
    MessageModel,
    Protocol,
    SingleFrameFramer,
    dispatch,
    expect_frames,
    expect_typ,
    first_json,
    load_json,
)

TYP = "albaem"


class AlbaemStart(MessageModel):
    message_id: int
    version: int
    message_type: Literal["series-start"] = "series-start"


class AlbaemData(MessageModel):
    message_id: int
    version: int
    message_type: Literal["data"] = "data"
    frame_number: int
    timestamp: float
    acquisition_timestamp: int
    # Optional, as in dranspose: a message without one still carries its frame.
    channel1: float | None = None
    channel2: float | None = None
    channel3: float | None = None
    channel4: float | None = None

    @property
    def channels(self) -> tuple[float | None, float | None, float | None, float | None]:
        return (self.channel1, self.channel2, self.channel3, self.channel4)


class AlbaemDetectorSpecific(MessageModel):
    read_overflow: bool = False
    memory_overflow: bool = False


class AlbaemEnd(MessageModel):
    message_id: int
    version: int
    message_type: Literal["series-end"] = "series-end"
    detector_specific: AlbaemDetectorSpecific | None = None


AlbaemPacketType = AlbaemStart | AlbaemData | AlbaemEnd
AlbaemPacket: TypeAdapter[AlbaemPacketType] = TypeAdapter(
    Annotated[AlbaemPacketType, Field(discriminator="message_type")]
)
"""Validates any AlbaEM message dict (``AlbaemPacket.validate_python(obj)``), as in dranspose."""

_MODELS: dict[str, tuple[type[AlbaemStart | AlbaemData | AlbaemEnd], Kind]] = {
    "series-start": (AlbaemStart, Kind.START),
    "data": (AlbaemData, Kind.DATA),
    "series-end": (AlbaemEnd, Kind.END),
}


def _validate(obj: dict[str, Any]) -> tuple[AlbaemPacketType, Kind]:
    return dispatch(obj, "message_type", _MODELS, "AlbaEM")


def parse(data: StreamData) -> AlbaemPacketType:
    """The AlbaEM message of one event."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "an AlbaEM message")
    return _validate(load_json(data.frames[0], "AlbaEM message"))[0]


class AlbaemFramer(SingleFrameFramer):
    typ = TYP

    def feed_frame(self, frame: Any) -> list[Framed]:
        _, kind = _validate(load_json(frame, "AlbaEM message"))
        return self.forward(kind, [frame])

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        obj = first_json(message)
        # PCAP's start has the same message_type but always an arm_time.
        return obj.get("message_type") == "series-start" and "arm_time" not in obj


# --- builders, for simulators and tests -------------------------------------------------------


def _frame(obj: dict[str, Any]) -> list[bytes]:
    return [json.dumps(obj).encode()]


def build_start(message_id: int = 1) -> list[bytes]:
    return _frame({"version": 1, "message_type": "series-start", "message_id": message_id})


def build_data(
    frame_number: int,
    channels: Sequence[float],
    timestamp: float,
    acquisition_timestamp: int,
    message_id: int | None = None,
) -> list[bytes]:
    """A data message; ``message_id`` defaults to ``frame_number + 2`` (after the start)."""
    if len(channels) != 4:
        raise ValueError(f"an AlbaEM has 4 channels, got {len(channels)} values")
    body: dict[str, Any] = {
        "version": 1,
        "message_type": "data",
        "message_id": frame_number + 2 if message_id is None else message_id,
        "frame_number": frame_number,
        "timestamp": timestamp,
        "acquisition_timestamp": acquisition_timestamp,
    }
    body.update({f"channel{i + 1}": float(value) for i, value in enumerate(channels)})
    return _frame(body)


def build_end(
    message_id: int, read_overflow: bool = False, memory_overflow: bool = False
) -> list[bytes]:
    return _frame(
        {
            "version": 1,
            "message_type": "series-end",
            "message_id": message_id,
            "detector_specific": {
                "read_overflow": read_overflow,
                "memory_overflow": memory_overflow,
            },
        }
    )


PROTOCOL = Protocol(
    typ=TYP,
    framer=AlbaemFramer,
    parse=parse,
    description="AlbaEM electrometer over ZMQ: JSON series-start / data (4 channels) / series-end",
)
