"""``dranspose.middlewares.xspress``: Xspress3 ``parse(stream_data)``."""

from tango_dranspose.streams.xspress3 import parse

__all__ = ["parse"]
