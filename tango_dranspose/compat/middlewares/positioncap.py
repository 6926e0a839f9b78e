"""``dranspose.middlewares.positioncap``: the stateful ``PositioncapParser``.

Keep one parser per scan and call ``parser.parse(stream_data)`` on every event, header first;
``parse`` alone handles headers and END lines only.
"""

from tango_dranspose.streams.positioncap import PositioncapParser, parse

__all__ = ["PositioncapParser", "parse"]
