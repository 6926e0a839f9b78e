"""Payloads of ``benchmarks.bench_publish``: what publishing costs the reducer.

The reducer does the same work on every result in both variants: adds a number to a
2048x2048 image in place and sets 100 scalars, holding its ``publish_rlock`` (as a payload
that changes published arrays in place must). The scan parameter ``publish_mode`` says where
the values live:

* ``publish``: in ``self.publish``, so the reducer device copies them (under the lock) and
  serves them as 103 attributes with change events;
* ``private``: in a private attribute; ``self.publish`` holds only the three bookkeeping
  values both variants have (``reduced``, ``t_first``, ``t_last``, ``gap_max``: the
  payload's own count, the monotonic times of its first and last result, for the
  reducer-side rate, and the longest time between two results, which shows stalls).

``publish_dtype`` (``float64`` by default, or ``float32``) is the image's dtype.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from tango_dranspose.core.parameters import StrParameter

N_SCALARS = 100
SHAPE = (2048, 2048)


def _param(parameters: Any, name: str, default: str) -> str:
    p = (parameters or {}).get(name)
    if p is None:
        return default
    if isinstance(p.value, str) and p.value:
        return p.value
    return bytes(p.data).decode() or default


class SmallDictWorker:
    """A trivial analysis: a small dict per event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        data = event.streams.get("cam")
        frames = data.length if data is not None else 0
        return {"event": event.event_number, "frames": frames, "value": 1.0}


class PublishReducer:
    """100 scalars and a 2048x2048 image updated on every result (see the module doc)."""

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [
            StrParameter(
                name="publish_mode",
                default="publish",
                description="publish: values in self.publish; private: the same work, unpublished",
            ),
            StrParameter(name="publish_dtype", default="float64", description="the image dtype"),
        ]

    def __init__(self, parameters: Any = None, *args: Any, **kwargs: Any) -> None:
        mode = _param(parameters, "publish_mode", "publish")
        if mode not in ("publish", "private"):
            raise ValueError(f"publish_mode must be publish or private, not {mode!r}")
        dtype = np.dtype(_param(parameters, "publish_dtype", "float64"))
        self.publish_rlock = threading.RLock()
        self._image = np.zeros(SHAPE, dtype=dtype)
        self._keys = [f"s{i:03d}" for i in range(N_SCALARS)]
        self._scalars: dict[str, float] = dict.fromkeys(self._keys, 0.0)
        self._cast = dtype.type
        self.publish: dict[str, Any] = {
            "reduced": 0,
            "t_first": 0.0,
            "t_last": 0.0,
            "gap_max": 0.0,
        }
        values = {"image": self._image, "scalars": self._scalars}
        if mode == "publish":
            self.publish.update(values)
            self._private: dict[str, Any] = {}
        else:
            self._private = values

    def process_result(self, result: Any, parameters: Any = None) -> None:
        now = time.monotonic()
        payload = result.payload
        value = float(payload["value"]) if isinstance(payload, dict) else 1.0
        with self.publish_rlock:
            np.add(self._image, self._cast(value), out=self._image)
            n = self.publish["reduced"] + 1
            scalars = self._scalars
            for i, key in enumerate(self._keys):
                scalars[key] = n * value + i
            pub = self.publish
            pub["reduced"] = n
            if n == 1:
                pub["t_first"] = now
            else:
                pub["gap_max"] = max(pub["gap_max"], now - pub["t_last"])
            pub["t_last"] = now
