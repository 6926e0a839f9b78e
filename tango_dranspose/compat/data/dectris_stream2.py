"""``data.dectris_stream2``: Dectris stream v2 message models (not in dranspose)."""

from tango_dranspose.streams.dectris_stream2 import (
    DectrisEnd,
    DectrisImage,
    DectrisMessage,
    DectrisPacket,
    DectrisStart,
)

__all__ = ["DectrisEnd", "DectrisImage", "DectrisMessage", "DectrisPacket", "DectrisStart"]
