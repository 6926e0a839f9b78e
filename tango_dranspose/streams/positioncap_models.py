"""PandABox position capture (typ ``PCAP_RAW``) message models.

The protocol, text parsing and framing are in :mod:`~tango_dranspose.streams.positioncap`,
which re-exports these models.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import TypeAdapter

from tango_dranspose.streams.base import MessageModel, ParseError


class PositionCapField(MessageModel):
    """One captured field: ``name`` is ``NAME.CAPTURE`` (``"PCAP.TS_TRIG.Value"``).

    In a header, ``value`` is None; in parsed values it holds the row's number.
    """

    name: str
    type: str
    value: int | float | None = None
    scale: float | None = None
    offset: float | None = None
    units: str | None = None

    @property
    def capture(self) -> str:
        """The capture mode: ``Value``, ``Min``, ``Max``, ``Mean``, ``Diff``, ..."""
        return self.name.rsplit(".", 1)[-1]

    def parse(self, text: str) -> PositionCapField:
        """A copy of this field holding ``text`` converted to the field's type."""
        return self.model_copy(update={"value": converter(self.type)(text)})


class PositionCapStart(MessageModel):
    """The header block; other ``key: value`` header lines are kept as string attributes."""

    arm_time: datetime
    start_time: datetime | None = None
    missed: int | None = None
    process: str | None = None
    format: str | None = None
    fields: list[PositionCapField] = []


class PositionCapValues(MessageModel):
    fields: dict[str, PositionCapField] = {}

    @property
    def values(self) -> dict[str, int | float | None]:
        """The row as ``{"NAME.CAPTURE": number}``."""
        return {name: field.value for name, field in self.fields.items()}

    def __getitem__(self, name: str) -> int | float | None:
        try:
            return self.fields[name].value
        except KeyError:
            known = ", ".join(self.fields) or "none"
            raise KeyError(f"no field {name!r} in this row; fields: {known}") from None


class PositionCapEnd(MessageModel):
    """``END <samples> <reason>``; the reason is ``Disarmed`` after a normal acquisition."""

    samples: int | None = None
    reason: str | None = None


PositionCapPacketType = PositionCapStart | PositionCapValues | PositionCapEnd
PositionCapPacket: TypeAdapter[PositionCapPacketType] = TypeAdapter(PositionCapPacketType)
"""The union as a validator, as in dranspose; prefer
:class:`~tango_dranspose.streams.positioncap.PositioncapParser` on raw frames."""


def converter(kind: str) -> Callable[[str], int | float]:
    """How values of a field of type ``kind`` (``uint32``, ``double``...) are read."""
    if kind.startswith(("uint", "int")):
        return int
    if kind in ("double", "float"):
        return float
    raise ParseError(f"position capture field type {kind!r} is not one of uint32, int32, double")
