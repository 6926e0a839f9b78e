"""``dranspose.middlewares.contrast``: ``parse(stream_data)``."""

from tango_dranspose.streams.contrast import parse

__all__ = ["parse"]
