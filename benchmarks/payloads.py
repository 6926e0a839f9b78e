"""Trivial payloads for benchmarks: the cost measured is the pipeline's, not the analysis'."""

from __future__ import annotations

from typing import Any


class CountWorker:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        return sum(len(f) for sd in event.streams.values() for f in sd.frames)


class CountReducer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {"events": 0, "bytes": 0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        self.publish["events"] += 1
        self.publish["bytes"] += result.payload


class FrameSumWorker:
    """The benchmark's trivial analysis: the frame's sum, plus its send time for latency."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import json

        import numpy as np

        self._json = json
        self._np = np

    def process_event(self, event: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        data = event.streams["cam"]
        if data.length != 2:
            return None
        import time

        started = time.time()
        head = self._json.loads(bytes(data.frames[0].buffer))
        image = self._np.frombuffer(data.frames[1].buffer, dtype=head["type"])
        return (head["t_send"], int(image.sum()), started)


class LatencyReducer:
    """Records, per result, the time from the source's send to the reducer's receipt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import numpy as np

        self._np = np
        self.latencies: list[float] = []
        self.to_worker: list[float] = []
        self.publish: dict[str, Any] = {"results": 0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        import time

        now = time.time()
        self.latencies.append(now - result.payload[0])
        self.to_worker.append(result.payload[2] - result.payload[0])

    def finish(self, parameters: Any = None) -> None:
        lat = self._np.array(self.latencies or [0.0])
        self.publish = {
            "results": len(self.latencies),
            "latency": lat,
            "to_worker": self._np.array(self.to_worker or [0.0]),
        }
