"""``dranspose.middlewares.lecroy``: LeCroy ``parse(stream_data)``."""

from tango_dranspose.streams.lecroy import parse

__all__ = ["parse"]
