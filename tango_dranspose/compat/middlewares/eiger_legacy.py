"""``dranspose.middlewares.eiger_legacy``: Dectris Eiger stream v1 ``parse(stream_data)``."""

from tango_dranspose.streams.eiger_legacy import parse

__all__ = ["parse"]
