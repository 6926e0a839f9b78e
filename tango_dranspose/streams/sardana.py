"""Sardana scan recorder posts (typ ``sardana``): one JSON object per HTTP POST.

A Sardana recorder POSTs, per scan, a ``DataDescription`` (scan number, directory, title,
``column_desc``, ``ref_moveables``, ``counters``, ...), one ``RecordData`` per point and a
``RecordEnd``; each post carries its ``type``. ``custom_data`` posts (``CustomData`` in some
recorder versions) are not part of the event stream: the framer ignores them, counted under
their own reason, as it does posts of an unknown ``type``.

The framer forwards each post unchanged as one frame: ``START`` the DataDescription, ``DATA``
one RecordData, ``END`` the RecordEnd.

Record columns are named as Sardana names them: motors by alias (``tom_ry``), channels by full
Tango URL (``tango://host:10000/expchan/x/1``). A :class:`SardanaRecordData` gives them as
attributes (``getattr(record, "tango://...")``, ``record.tom_ry``), by name
(``record["tango://..."]``) and all together (``record.values``). The DataDescription maps the
human labels of the scan window to those names (``description.labels["orca"]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.base import (
    Framed,
    Kind,
    MessageModel,
    Protocol,
    SingleFrameFramer,
    dispatch,
    expect_frames,
    expect_typ,
    first_json,
    load_json,
    lookup,
)

TYP = "sardana"
IGNORED_TYPES = frozenset({"custom_data", "CustomData"})


class SardanaDataDescription(MessageModel):
    type: Literal["DataDescription"] = "DataDescription"
    serialno: int
    scandir: str
    title: str
    column_desc: list[dict[str, Any]] = []
    ref_moveables: list[str] = []
    estimatedtime: float | None = None
    total_scan_intervals: int | None = None
    starttime: str | None = None
    counters: list[str] = []
    scanfile: list[str] | str | None = None

    @property
    def column_names(self) -> list[str]:
        """The record columns in scan order (``point_nb``, motors, channels, ``timestamp``)."""
        return [str(column.get("name")) for column in self.column_desc]

    @property
    def labels(self) -> dict[str, str]:
        """Column name by the label Sardana shows (``"orca"`` -> ``"tango://.../orca_ctrl/1"``)."""
        return {
            str(column["label"]): str(column["name"])
            for column in self.column_desc
            if "label" in column and "name" in column
        }


class SardanaRecordData(MessageModel):
    type: Literal["RecordData"] = "RecordData"
    timestamp: float
    point_nb: int | None = None
    """Sardana always sends it; optional as in dranspose, so that a record without it is
    still an event."""

    @property
    def values(self) -> dict[str, Any]:
        """Every column of this point by name, ``point_nb`` and ``timestamp`` included."""
        return {key: value for key, value in self if key != "type"}

    def __getitem__(self, name: str) -> Any:
        values = self.values
        try:
            return values[name]
        except KeyError:
            raise KeyError(
                f"no column {name!r} in this Sardana record; columns: {', '.join(values)}"
            ) from None


class SardanaRecordEnd(MessageModel):
    type: Literal["RecordEnd"] = "RecordEnd"
    endtime: str | None = None
    deadtime: float | None = None


SardanaPacketType = SardanaDataDescription | SardanaRecordData | SardanaRecordEnd
SardanaPacket: TypeAdapter[SardanaPacketType] = TypeAdapter(
    Annotated[SardanaPacketType, Field(discriminator="type")]
)
"""Validates any Sardana post (``SardanaPacket.validate_python(obj)``), as in dranspose."""

_MODELS: dict[str, tuple[type[SardanaPacketType], Kind]] = {
    "DataDescription": (SardanaDataDescription, Kind.START),
    "RecordData": (SardanaRecordData, Kind.DATA),
    "RecordEnd": (SardanaRecordEnd, Kind.END),
}


def _validate(obj: dict[str, Any]) -> tuple[SardanaPacketType, Kind]:
    return dispatch(obj, "type", _MODELS, "Sardana")


def parse(data: StreamData) -> SardanaPacketType:
    """The Sardana post of one event."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "a Sardana post")
    return _validate(load_json(data.frames[0], "Sardana post"))[0]


class SardanaFramer(SingleFrameFramer):
    typ = TYP

    def feed_frame(self, frame: Any) -> list[Framed]:
        obj = load_json(frame, "Sardana post")
        kind_name = obj.get("type")
        if isinstance(kind_name, str) and kind_name in IGNORED_TYPES:
            return self.drop("custom_data post ignored", [frame])
        if lookup(_MODELS, kind_name) is None:
            return self.drop("post of unknown type ignored", f"type {kind_name!r}")
        _, kind = _validate(obj)
        return self.forward(kind, [frame])

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        return first_json(message).get("type") == "DataDescription"


# --- builders, for simulators and tests -------------------------------------------------------


def _frame(obj: Mapping[str, Any]) -> list[bytes]:
    return [json.dumps(obj).encode()]


def build_data_description(
    motors: Sequence[str],
    counters: Sequence[str],
    serialno: int = 1,
    scandir: str = "/tmp/scans",
    title: str | None = None,
    total_scan_intervals: int = 10,
    starttime: str = "Mon Oct 28 15:02:31 2024",
    scanfile: Sequence[str] = ("scan.h5",),
) -> list[bytes]:
    """A DataDescription; ``counters`` are channel names (full Tango URLs as Sardana sends)."""
    columns: list[dict[str, Any]] = [
        {"name": "point_nb", "label": "#Pt No", "dtype": "int64", "shape": []}
    ]
    columns += [
        {
            "name": motor,
            "label": motor,
            "dtype": "float64",
            "shape": [],
            "instrument": "",
            "is_reference": True,
        }
        for motor in motors
    ]
    columns += [
        {
            "name": counter,
            "label": counter.rstrip("/").rsplit("/", 2)[-2],
            "source": f"{counter}/Value",
            "dtype": "float64",
            "shape": [],
            "instrument": "",
            "output": True,
            "plot_type": 1,
            "plot_axes": list(motors[:1]),
        }
        for counter in counters
    ]
    columns.append({"name": "timestamp", "label": "dt", "dtype": "float64", "shape": []})
    return _frame(
        {
            "type": "DataDescription",
            "serialno": serialno,
            "scandir": scandir,
            "title": title or f"ascan {' '.join(motors)} {total_scan_intervals}",
            "column_desc": columns,
            "ref_moveables": list(motors),
            "estimatedtime": 0.0,
            "total_scan_intervals": total_scan_intervals,
            "starttime": starttime,
            "counters": list(counters),
            "scanfile": list(scanfile),
        }
    )


def build_record_data(point_nb: int, values: Mapping[str, Any], timestamp: float) -> list[bytes]:
    """One point: ``values`` maps column name (motor alias or channel URL) to its value."""
    return _frame({"type": "RecordData", "timestamp": timestamp, "point_nb": point_nb, **values})


def build_record_end(
    endtime: str = "Mon Oct 28 15:02:41 2024", deadtime: float = 0.0
) -> list[bytes]:
    return _frame({"type": "RecordEnd", "endtime": endtime, "deadtime": deadtime})


def build_custom_data(name: str, value: Any) -> list[bytes]:
    """A custom_data post, which the framer ignores."""
    return _frame({"type": "custom_data", "name": name, "value": value})


PROTOCOL = Protocol(
    typ=TYP,
    framer=SardanaFramer,
    parse=parse,
    description="Sardana recorder posts: DataDescription / RecordData / RecordEnd (JSON)",
)
