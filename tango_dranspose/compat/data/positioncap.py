"""``dranspose.data.positioncap``: PandABox position capture (TCP) message models."""

from tango_dranspose.streams.positioncap import (
    PositionCapEnd,
    PositionCapField,
    PositionCapPacket,
    PositionCapPacketType,
    PositionCapStart,
    PositionCapValues,
)

__all__ = [
    "PositionCapEnd",
    "PositionCapField",
    "PositionCapPacket",
    "PositionCapPacketType",
    "PositionCapStart",
    "PositionCapValues",
]
