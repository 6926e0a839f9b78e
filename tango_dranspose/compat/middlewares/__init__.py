"""Parsers per protocol, under dranspose's ``dranspose.middlewares.<protocol>`` paths."""
