"""``dranspose.middlewares.pcap``: ``parse(stream_data)``."""

from tango_dranspose.streams.pcap import parse

__all__ = ["parse"]
