"""``dranspose.data.sardana``: Sardana recorder post models."""

from tango_dranspose.streams.sardana import (
    SardanaDataDescription,
    SardanaPacket,
    SardanaPacketType,
    SardanaRecordData,
    SardanaRecordEnd,
)

__all__ = [
    "SardanaDataDescription",
    "SardanaPacket",
    "SardanaPacketType",
    "SardanaRecordData",
    "SardanaRecordEnd",
]
