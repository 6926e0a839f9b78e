"""``dranspose.data.stream1``: STINS message models (``Series*`` are dranspose's older names)."""

from tango_dranspose.streams.stream1 import (
    Stream1Data,
    Stream1End,
    Stream1Message,
    Stream1Packet,
    Stream1Start,
)

SeriesStart = Stream1Start
SeriesData = Stream1Data
SeriesEnd = Stream1End

__all__ = [
    "SeriesData",
    "SeriesEnd",
    "SeriesStart",
    "Stream1Data",
    "Stream1End",
    "Stream1Message",
    "Stream1Packet",
    "Stream1Start",
]
