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
