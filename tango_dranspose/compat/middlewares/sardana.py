"""``dranspose.middlewares.sardana``: ``parse(stream_data)``."""

from tango_dranspose.streams.sardana import parse

__all__ = ["parse"]
