"""``dranspose.data.contrast``: Contrast scan software message models."""

from tango_dranspose.streams.contrast import (
    ContrastFinished,
    ContrastHeartbeat,
    ContrastPacket,
    ContrastPacketType,
    ContrastRunning,
    ContrastStarted,
)

__all__ = [
    "ContrastFinished",
    "ContrastHeartbeat",
    "ContrastPacket",
    "ContrastPacketType",
    "ContrastRunning",
    "ContrastStarted",
]
