"""PandABox position capture as the PandA sends it, for simulators and tests.

:mod:`~tango_dranspose.streams.positioncap` re-exports all of these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from tango_dranspose.streams.positioncap_models import PositionCapField


def field(
    name: str,
    type: str = "double",
    scale: float | None = 1.0,
    offset: float | None = 0.0,
    units: str | None = "",
) -> PositionCapField:
    """A header field description; ``name`` is ``NAME.CAPTURE``. ``uint32`` fields carry no
    scale, offset or units."""
    if type.startswith(("uint", "int")):
        scale = offset = units = None
    return PositionCapField(name=name, type=type, scale=scale, offset=offset, units=units)


# The layout of the DanMAX tomography capture (rotation stage ``tom_ry`` on INENC2).
TOMO_FIELDS: tuple[PositionCapField, ...] = (
    field("PCAP.BITS0.Value", "uint32"),
    field("INENC2.VAL.Min"),
    field("INENC2.VAL.Max"),
    field("PCAP.TS_TRIG.Value", scale=8e-09, units="s"),
    field("INENC2.VAL.Mean"),
    field("SFP3_SYNC_IN.POS1.Mean"),
)


def _number(value: float) -> str:
    return f"{value:.15g}"


def build_header(
    fields: Iterable[PositionCapField] = TOMO_FIELDS,
    arm_time: datetime | None = None,
    missed: int = 0,
    process: str = "Scaled",
) -> bytes:
    """A header block, as the PandA sends it on arm."""
    when = (arm_time or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    lines = [
        f"arm_time: {stamp}",
        f"start_time: {stamp}",
        f"missed: {missed}",
        f"process: {process}",
        "format: ASCII",
        "fields:",
    ]
    for f in fields:
        name, capture = f.name.rsplit(".", 1)
        line = f" {name} {f.type} {capture}"
        if f.scale is not None:
            line += f" scale: {_number(f.scale)} offset: {_number(f.offset or 0.0)}"
            line += f" units: {f.units or ''}"
        lines.append(line)
    return ("\n".join(lines) + "\n\n").encode("ascii")


def build_values(values: Iterable[int | float]) -> bytes:
    """One value line (leading space, space-separated, newline), as the PandA formats it."""
    return (" " + " ".join(str(v) for v in values) + "\n").encode("ascii")


def build_end(samples: int, reason: str = "Disarmed") -> bytes:
    return f"END {samples} {reason}\n".encode("ascii")


def rotation_rows(
    count: int, start: float = 0.0, stop: float = 180.0, period: float = 0.133
) -> list[tuple[int | float, ...]]:
    """Rows for :data:`TOMO_FIELDS` of a stage rotating from ``start`` to ``stop`` degrees."""
    span = max(count - 1, 1)
    step = (stop - start) / span
    rows: list[tuple[int | float, ...]] = []
    for i in range(count):
        angle = start + (stop - start) * i / span
        trig = round(0.6 + period * i, 9)
        rows.append((64806368, angle - step / 2, angle + step / 2, trig, angle, 1000.0 * i))
    return rows


def build_arm(
    rows: Sequence[Sequence[int | float]],
    fields: Iterable[PositionCapField] = TOMO_FIELDS,
    arm_time: datetime | None = None,
) -> bytes:
    """Everything one arm sends: header, one line per row, ``END <n> Disarmed``."""
    return (
        build_header(fields, arm_time)
        + b"".join(build_values(row) for row in rows)
        + build_end(len(rows))
    )
