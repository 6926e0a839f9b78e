"""Three-stream analysis of a tomography scan (the ``danmax-tomo`` capture).

Per point: the camera frame's sum (``orca``, STINS), the rotation encoder from the PandABox
position capture (``pcap_rot``, PCAP_RAW) and the Sardana point number (``sardana``).
The reducer publishes the three as columns ordered by point, ready to plot sum against angle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tango_dranspose.compat.data.positioncap import PositionCapValues
from tango_dranspose.compat.data.sardana import SardanaRecordData
from tango_dranspose.compat.data.stream1 import Stream1Data
from tango_dranspose.compat.middlewares.positioncap import PositioncapParser
from tango_dranspose.compat.middlewares.sardana import parse as parse_sardana
from tango_dranspose.compat.middlewares.stream1 import parse as parse_stins
from tango_dranspose.compat.parameters import StrParameter


class TomoWorker:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Stateful: learns the capture fields from the start event every worker receives.
        self.pcap = PositioncapParser()

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [
            StrParameter(
                name="angle_field",
                description="position-capture column holding the rotation (NAME.CAPTURE)",
                default="INENC2.VAL.Mean",
            )
        ]

    def process_event(self, event: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        out: dict[str, Any] = {}
        if "pcap_rot" in event.streams:
            values = self.pcap.parse(event.streams["pcap_rot"])
            if isinstance(values, PositionCapValues):
                field = parameters["angle_field"].value if parameters else "INENC2.VAL.Mean"
                angle = values.fields[field].value
                if angle is not None:
                    out["angle"] = float(angle)
        if "orca" in event.streams:
            packet = parse_stins(event.streams["orca"])
            if isinstance(packet, Stream1Data):
                out["camera_sum"] = float(np.asarray(packet.data, dtype=np.float64).sum())
                out["frame"] = packet.frame
        if "sardana" in event.streams:
            record = parse_sardana(event.streams["sardana"])
            if isinstance(record, SardanaRecordData):
                out["point_nb"] = record.point_nb
        return out or None


class TomoReducer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._points: dict[int, dict[str, Any]] = {}
        self.publish: dict[str, Any] = {"tomo": {}}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        self._points.setdefault(result.event_number, {}).update(result.payload)

    def finish(self, parameters: Any = None) -> None:
        rows = [self._points[k] for k in sorted(self._points)]

        def column(name: str, dtype: Any) -> np.ndarray:
            return np.array([r.get(name, np.nan) for r in rows], dtype=dtype)

        self.publish["tomo"] = {
            "point_nb": column("point_nb", np.float64).astype(np.int64),
            "angle": column("angle", np.float64),
            "camera_sum": column("camera_sum", np.float64),
            "camera_sum_attrs": {"long_name": "sum of the camera frame"},
            "_attrs": {"NX_class": "NXdata", "signal": "camera_sum", "axes": "angle"},
        }
