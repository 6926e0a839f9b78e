"""Payloads for runtime tests (importable as tests.runtime.payloads)."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from tango_dranspose.streams.stream1 import Stream1Data, parse


class FrameSumWorker:
    """Returns (worker pid-free name, frame, sum) for images; raises on frames in ``fail_on``."""

    def __init__(
        self, *args: Any, parameters: Any = None, state: Any = None, **kwargs: Any
    ) -> None:
        self.seen: list[int] = []

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        out: dict[str, Any] = {
            "event": event.event_number,
            "streams": sorted(event.streams),
            "tick": tick,
        }
        for name, data in event.streams.items():
            if data.typ == "STINS":
                pkt = parse(data)
                if isinstance(pkt, Stream1Data):
                    if pkt.frame in FAIL_ON:
                        raise RuntimeError(f"cannot analyse frame {pkt.frame}")
                    out[name] = float(np.asarray(pkt.data, dtype=np.float64).sum())
                    out["frame"] = pkt.frame
        out["pid"] = os.getpid()
        out["thread"] = threading.current_thread().name
        return out


FAIL_ON: set[int] = set()


class CollectReducer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {"results": []}
        self.finished = False

    def process_result(self, result: Any, parameters: Any = None) -> None:
        self.publish["results"].append(
            {"event": result.event_number, "worker": result.worker, **result.payload}
        )

    def finish(self, parameters: Any = None) -> None:
        self.finished = True
        self.publish["count"] = len(self.publish["results"])
