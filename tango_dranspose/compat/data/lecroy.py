"""``dranspose.data.lecroy``: LeCroy oscilloscope message models."""

from tango_dranspose.streams.lecroy import (
    LecroyData,
    LecroyEnd,
    LecroyMessage,
    LecroyPacket,
    LecroyParsed,
    LecroyPrepare,
    LecroySeqEnd,
    LecroySeqStart,
)

__all__ = [
    "LecroyData",
    "LecroyEnd",
    "LecroyMessage",
    "LecroyPacket",
    "LecroyParsed",
    "LecroyPrepare",
    "LecroySeqEnd",
    "LecroySeqStart",
]
