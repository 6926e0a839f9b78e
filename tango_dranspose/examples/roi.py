"""ROI intensity of a STINS camera stream (e.g. the ``xrd`` capture).

Worker: the sum inside a region of interest and over the whole frame, per image.
Reducer: both as curves over the frame number, plus the summed image.
Written only against ``tango_dranspose.compat`` so it reads like a ported dranspose payload.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tango_dranspose.compat.data.stream1 import Stream1Data
from tango_dranspose.compat.middlewares.stream1 import parse as parse_stins
from tango_dranspose.compat.parameters import FloatParameter, StrParameter


def _roi(parameters: dict[str, Any] | None) -> tuple[slice, slice]:
    raw = parameters["roi"].value if parameters and "roi" in parameters else ""
    if not raw:
        return slice(None), slice(None)
    r0, r1, c0, c1 = (int(v) for v in json.loads(raw))
    return slice(r0, r1), slice(c0, c1)


class RoiWorker:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [
            StrParameter(
                name="roi",
                description="region of interest as JSON [row0, row1, col0, col1], end exclusive; "
                "empty for the whole frame",
                default="",
            ),
            FloatParameter(
                name="threshold",
                description="pixel values above this are ignored (0: keep all)",
                default=0.0,
            ),
        ]

    def process_event(self, event: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        for data in event.streams.values():
            if data.typ != "STINS":
                continue
            packet = parse_stins(data)
            if not isinstance(packet, Stream1Data) or packet.data is None:
                return None
            image = packet.data.astype(np.float64)
            threshold = parameters["threshold"].value if parameters else 0.0
            if threshold:
                image = np.where(image > threshold, 0.0, image)
            rows, cols = _roi(parameters)
            return {
                "frame": packet.frame,
                "roi_sum": float(image[rows, cols].sum()),
                "total": float(image.sum()),
                "image": image,
            }
        return None


class RoiReducer:
    def __init__(self, *args: Any, parameters: Any = None, **kwargs: Any) -> None:
        self._rows: dict[int, tuple[int, float, float]] = {}
        self._sum: np.ndarray | None = None
        roi = parameters["roi"].value if parameters and "roi" in parameters else ""
        self.publish: dict[str, Any] = {
            "roi": {
                "frame": np.zeros(0, dtype=np.int64),
                "intensity": np.zeros(0),
                "total": np.zeros(0),
            },
            "roi_attrs": {"roi": roi or "whole frame", "NX_class": "NXdata", "signal": "intensity"},
            "frames": 0,
        }

    def process_result(self, result: Any, parameters: Any = None) -> None:
        p = result.payload
        self._rows[result.event_number] = (p["frame"], p["roi_sum"], p["total"])
        self._sum = p["image"].copy() if self._sum is None else self._sum + p["image"]

    def _update(self) -> None:
        # Results may arrive out of order: publish in event order.
        rows = [self._rows[k] for k in sorted(self._rows)]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        self.publish["roi"] = {
            "frame": arr[:, 0].astype(np.int64),
            "intensity": arr[:, 1],
            "intensity_attrs": {"units": "counts", "long_name": "sum inside the ROI"},
            "total": arr[:, 2],
        }
        if self._sum is not None:
            self.publish["sum_image"] = self._sum
        self.publish["frames"] = len(rows)

    def timer(self, parameters: Any = None) -> float:
        self._update()
        return 0.5

    def finish(self, parameters: Any = None) -> None:
        self._update()
