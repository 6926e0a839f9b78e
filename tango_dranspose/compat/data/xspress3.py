"""``dranspose.data.xspress3``: Xspress3 message models."""

from tango_dranspose.streams.xspress3 import (
    META_NAMES,
    XspressEnd,
    XspressImage,
    XspressMessage,
    XspressPacket,
    XspressStart,
)

__all__ = [
    "META_NAMES",
    "XspressEnd",
    "XspressImage",
    "XspressMessage",
    "XspressPacket",
    "XspressStart",
]
