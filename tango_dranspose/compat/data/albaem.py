"""``dranspose.data.albaem``: AlbaEM electrometer message models."""

from tango_dranspose.streams.albaem import (
    AlbaemData,
    AlbaemDetectorSpecific,
    AlbaemEnd,
    AlbaemPacket,
    AlbaemPacketType,
    AlbaemStart,
)

__all__ = [
    "AlbaemData",
    "AlbaemDetectorSpecific",
    "AlbaemEnd",
    "AlbaemPacket",
    "AlbaemPacketType",
    "AlbaemStart",
]
