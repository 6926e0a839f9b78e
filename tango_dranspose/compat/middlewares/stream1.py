"""``dranspose.middlewares.stream1``: STINS ``parse(stream_data)``."""

from tango_dranspose.streams.stream1 import parse

__all__ = ["parse"]
