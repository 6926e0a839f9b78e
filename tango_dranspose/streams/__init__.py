"""Upstream protocols: one module per protocol, typed models and ``parse``; no I/O."""

from __future__ import annotations

import importlib

from tango_dranspose.streams.base import Framed, Framer, Kind, ParseError, Protocol

# Protocol modules by name; each defines ``PROTOCOL``. Imported on first use.
_MODULES = (
    "stream1",
    "eiger_legacy",
    "dectris_stream2",
    "xspress3",
    "pcap",
    "positioncap",
    "albaem",
    "contrast",
    "sardana",
    "lecroy",
)

_registry: dict[str, Protocol] | None = None


def protocols() -> dict[str, Protocol]:
    """Every known protocol by its ``typ`` tag (``STINS``, ``xspress``, ``PCAP_RAW``, ...)."""
    global _registry
    if _registry is None:
        found: dict[str, Protocol] = {}
        for name in _MODULES:
            module = importlib.import_module(f"{__name__}.{name}")
            proto: Protocol = module.PROTOCOL
            found[proto.typ] = proto
        _registry = found
    return _registry


def get_protocol(name: str) -> Protocol:
    """Look a protocol up by ``typ`` (case-insensitive); the error lists the known ones."""
    table = protocols()
    if name in table:
        return table[name]
    lowered = {k.lower(): v for k, v in table.items()}
    if name.lower() in lowered:
        return lowered[name.lower()]
    raise KeyError(f"unknown protocol {name!r}; known: {', '.join(sorted(table))}")


__all__ = ["Framed", "Framer", "Kind", "ParseError", "Protocol", "get_protocol", "protocols"]
