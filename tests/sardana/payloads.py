"""Payloads for the Sardana system tests: each point's camera frame beside its Sardana record."""

from __future__ import annotations

from typing import Any

import numpy as np

from tango_dranspose.streams import sardana, stream1


class PointWorker:
    """One row per data event: the camera frame's number and sum, the Sardana record's point
    number and motor position (whatever of them the event holds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @staticmethod
    def describe_parameters() -> list[Any]:
        from tango_dranspose.core.parameters import FloatParameter

        return [FloatParameter(name="threshold", default=0.5)]

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        row: dict[str, Any] = {"event": event.event_number}
        cam = event.streams.get("cam")
        if cam is not None:
            pkt = stream1.parse(cam)
            if isinstance(pkt, stream1.Stream1Data):
                row["frame"] = pkt.frame
                row["intensity"] = float(np.asarray(pkt.data, dtype=np.float64).sum())
        rec = event.streams.get("sardana")
        if rec is not None:
            msg = sardana.parse(rec)
            if isinstance(msg, sardana.SardanaRecordData):
                row["point_nb"] = msg.point_nb
                row["mot01"] = float(msg.values.get("mot01", np.nan))
        return row if len(row) > 1 else None


class PointReducer:
    """The rows as columns in event order, published (and written to the result file)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        # From the start: a scan channel reads it at every point (reduced01 of the test YAML).
        self.publish: dict[str, Any] = {"points": 0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        if result.payload:
            self.rows.append(result.payload)
            self.publish["points"] = len(self.rows)
            self.publish["last_intensity"] = float(result.payload.get("intensity", np.nan))

    def finish(self, parameters: Any = None) -> None:
        rows = sorted(self.rows, key=lambda r: r["event"])

        def column(key: str) -> Any:
            return np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)

        self.publish.update(
            event=np.array([r["event"] for r in rows], dtype=np.int64),
            frame=column("frame"),
            point_nb=column("point_nb"),
            mot01=column("mot01"),
            intensity=column("intensity"),
            points=len(rows),
        )
