"""Payloads for the system tests (importable as tests.system.payloads)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tango_dranspose.core.parameters import FloatParameter, StrParameter
from tango_dranspose.streams.stream1 import Stream1Data, parse


class ScaleWorker:
    """Reports each image's frame number with the ``scale`` it was computed with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [
            FloatParameter(name="scale", default=1.0, description="factor applied to frames"),
            StrParameter(name="label", default="none"),
        ]

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        for data in event.streams.values():
            msg = parse(data)
            if isinstance(msg, Stream1Data):
                return {"frame": msg.frame, "scale": parameters["scale"].value}
        return None


class ScaleReducer:
    """Publishes, per result, the scale its worker used and the scale the reducer was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.rows: list[tuple[int, float, float]] = []
        self.publish: dict[str, Any] = {"last_scale": 0.0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        self.rows.append((result.event_number, result.payload["scale"], parameters["scale"].value))
        self.publish["last_scale"] = float(result.payload["scale"])
        n = len(self.rows)
        self.publish["shapes"] = {
            "count": n,
            "positions": np.arange(n, dtype=np.float64),
            "positions_attrs": {"units": "mm", "long_name": "motor positions"},
            "image": np.full((4, 3), n, dtype=np.uint16),
            "names": ["a", "b"],
            "ok": True,
        }

    def finish(self, parameters: Any = None) -> None:
        rows = sorted(self.rows)
        self.publish = {
            "event": np.array([r[0] for r in rows], dtype=np.int64),
            "worker_scale": np.array([r[1] for r in rows]),
            "reducer_scale": np.array([r[2] for r in rows]),
            "last_scale": float(rows[-1][1]) if rows else 0.0,
            "shapes": self.publish.get("shapes", {}),
            # Over the 64 MiB an attribute may carry: listed, not served.
            "big": np.zeros(9 << 20, dtype=np.float64),
        }
