"""``dranspose.data.eiger_legacy``: Dectris Eiger stream v1 message models."""

from tango_dranspose.streams.eiger_legacy import (
    EigerLegacyArray,
    EigerLegacyEnd,
    EigerLegacyHeader,
    EigerLegacyImage,
    EigerLegacyMessage,
    EigerLegacyPacket,
)

__all__ = [
    "EigerLegacyArray",
    "EigerLegacyEnd",
    "EigerLegacyHeader",
    "EigerLegacyImage",
    "EigerLegacyMessage",
    "EigerLegacyPacket",
]
