"""Payloads for runtime tests (importable as tests.runtime.payloads)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
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


class ProbeWorker:
    """For process tests: reports what each event held, as flat values.

    Parameter ``fail_every`` (int): raise on data frames whose number is a multiple of it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from tango_dranspose.streams.positioncap import PositioncapParser

        self.positions = PositioncapParser()

    @staticmethod
    def describe_parameters() -> list[Any]:
        from tango_dranspose.core.parameters import IntParameter

        return [IntParameter(name="fail_every", default=0)]

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        from tango_dranspose.streams import get_protocol

        row: dict[str, Any] = {
            "event": event.event_number,
            "streams": ",".join(sorted(event.streams)),
        }
        for name, data in event.streams.items():
            if data.typ == "PCAP_RAW":
                msg = self.positions.parse(data)
            else:
                msg = get_protocol(data.typ).parse(data)
            value = _value(msg)
            if value is not None:
                row[f"value_{name}"] = value
            frame = getattr(msg, "frame", getattr(msg, "frame_number", None))
            if isinstance(frame, int):
                row["frame"] = frame
        fail = parameters["fail_every"].value if parameters else 0
        if fail and "frame" in row and row["frame"] % fail == 0:
            raise ValueError(f"refusing frame {row['frame']}")
        return row


def _value(msg: Any) -> float | None:
    data = getattr(msg, "data", None)
    if isinstance(data, np.ndarray):
        return float(data.astype(np.float64).sum())
    if hasattr(msg, "point_nb"):
        return float(msg.point_nb)
    fields = getattr(msg, "fields", None)
    if isinstance(fields, dict) and fields and msg.__class__.__name__ == "PositionCapValues":
        return float(next(iter(fields.values())).value)
    for attr in ("energy", "channel1"):
        if hasattr(msg, attr):
            return float(getattr(msg, attr))
    return None


class ColumnsReducer:
    """Publishes the probe rows as columns (event order, one row per result)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        self.publish: dict[str, Any] = {}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        self.rows.append({**result.payload, "worker": result.worker})

    def finish(self, parameters: Any = None) -> None:
        rows = sorted(self.rows, key=lambda r: (r["event"], r["worker"]))
        keys = sorted({k for r in rows for k in r if k.startswith("value_")})
        self.publish = {
            "event": np.array([r["event"] for r in rows], dtype=np.int64),
            "worker": [r["worker"] for r in rows] or [""],
            "streams": [r["streams"] for r in rows] or [""],
            "frame": np.array([r.get("frame", -1) for r in rows], dtype=np.int64),
            **{k: np.array([r.get(k, np.nan) for r in rows], dtype=np.float64) for k in keys},
            "count": len(rows),
        }


@dataclass
class Point:
    frame: int
    total: float


class ModelWorker:
    """Returns a payload dataclass and a parsed stream model (both must be decodable)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        pkt = parse(event.streams["cam"])
        if not isinstance(pkt, Stream1Data):
            return None
        pkt.data = None  # the frame itself is not needed by the reducer
        total = float(np.asarray(parse(event.streams["cam"]).data, dtype=np.float64).sum())
        return {"event": event.event_number, "point": Point(pkt.frame, total), "packet": pkt}


class SlowWorker:
    """Takes 5 ms per event, like a heavy analysis (to test back-pressure)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        import time

        time.sleep(0.005)
        return None


class TickWorker(FrameSumWorker):
    """Asks for a tick on every event it can get one (the scheduler grants one per interval)."""

    def get_tick_interval(self, parameters: Any = None) -> float:
        return 1e-6


CLOSED: list[str] = []


class ClosingWorker(FrameSumWorker):
    """Records that close(context) ran, with what the context held."""

    def __init__(self, *args: Any, context: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        context["opened"] = context.get("opened", 0) + 1

    def close(self, context: Any) -> None:
        CLOSED.append(f"worker opened={context['opened']}")


class ClosingReducer(CollectReducer):
    def close(self, context: Any) -> None:
        CLOSED.append("reducer")
