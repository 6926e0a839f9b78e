"""``dranspose.middlewares.albaem``: ``parse(stream_data)``."""

from tango_dranspose.streams.albaem import parse

__all__ = ["parse"]
