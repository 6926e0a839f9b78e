"""``middlewares.dectris_stream2``: Dectris stream v2 ``parse(stream_data)`` (not in dranspose)."""

from tango_dranspose.streams.dectris_stream2 import parse

__all__ = ["parse"]
