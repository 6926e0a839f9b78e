"""Payloads and plumbing for the fault tests (importable as tests.runtime.faults).

``PairWorker`` keeps the first frame of each pair (events 2n+1 and 2n+2 of a map with
constraint ``i // 2``) and returns, with the second, the sum of both: a pair split across
workers shows as ``pair = -1``. ``PairReducer`` publishes per event its value, its pair sum and
how many results it reduced for it, so a result file shows frames reduced twice or never.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from tango_dranspose.streams.stream1 import Stream1Data, build_end, build_header, build_image
from tango_dranspose.streams.stream1 import parse as parse_stins


class PairWorker:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.first: dict[int, float] = {}

    def process_event(self, event: Any, parameters: Any = None) -> Any:
        data = event.streams.get("cam")
        if data is None:
            return None
        pkt = parse_stins(data)
        if not isinstance(pkt, Stream1Data):
            return None
        index = event.event_number - 1  # the map's index (event 0 is the start message)
        value = float(np.asarray(pkt.data, dtype=np.float64).sum())
        if index % 2 == 0:
            self.first[index // 2] = value
            return {"event": event.event_number, "value": value, "pair": 0.0}
        first = self.first.pop(index // 2, None)
        return {
            "event": event.event_number,
            "value": value,
            "pair": -1.0 if first is None else first + value,
        }


class PairReducer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {}
        self.values: dict[int, float] = {}
        self.pairs: dict[int, float] = {}
        self.counts: dict[int, int] = {}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        p = result.payload
        event = int(p["event"])
        self.counts[event] = self.counts.get(event, 0) + 1
        self.values[event] = p["value"]
        self.pairs[event] = p["pair"]

    def finish(self, parameters: Any = None) -> None:
        events = sorted(self.values)
        self.publish = {
            "event": np.array(events, dtype=np.int64),
            "value": np.array([self.values[e] for e in events]),
            "pair": np.array([self.pairs[e] for e in events]),
            "count": np.array([self.counts[e] for e in events], dtype=np.int64),
        }


def pairs_map(n: int) -> dict[str, Any]:
    return {"cam": [[{"constraint": i // 2}] for i in range(n)]}


def stins_series(n: int, seed: int = 7, shape: tuple[int, int] = (8, 8)) -> list[list[bytes]]:
    """A STINS series of ``n`` images: header, images, end."""
    rng = np.random.default_rng(seed)
    return [
        build_header("", 0),
        *(
            build_image(rng.integers(0, 1000, size=shape, dtype=np.uint16), i, i + 1)
            for i in range(n)
        ),
        build_end(n + 1),
    ]


def expected_pairs(messages: Sequence[Sequence[bytes]]) -> tuple[np.ndarray, np.ndarray]:
    values = []
    for m in messages[1:-1]:
        from tango_dranspose.core.events import StreamData

        pkt = parse_stins(StreamData("STINS", list(m)))
        assert isinstance(pkt, Stream1Data)
        values.append(float(np.asarray(pkt.data, dtype=np.float64).sum()))
    v = np.array(values)
    pairs = np.zeros_like(v)
    pairs[1::2] = v[0::2] + v[1::2]
    return v, pairs


class Feeder:
    """Plays a detector: sends messages on a bound PUSH socket from a thread (sends block
    while the pipeline applies back-pressure)."""

    def __init__(
        self, ctx: zmq.Context[Any], address: str = "tcp://127.0.0.1:0", hwm: int = 1000
    ) -> None:
        self.ctx = ctx
        self.hwm = hwm
        self.sock = self._bind(address)
        self.address = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0

    def _bind(self, address: str) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.SNDTIMEO, 60_000)
        # ZeroMQ releases a closed socket's port in its I/O thread, a moment later.
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.bind(address)
                return sock
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    sock.close(0)
                    raise
                time.sleep(0.05)

    def send(self, messages: Sequence[Sequence[bytes]]) -> None:
        self.wait()
        self._stop.clear()
        sock = self.sock

        def run() -> None:
            # Non-blocking sends and short polls: a detector told to die stops at once (a
            # ZeroMQ socket must not be closed while another thread uses it).
            for m in messages:
                while True:
                    if self._stop.is_set():
                        return
                    try:
                        sock.send_multipart(list(m), zmq.NOBLOCK)
                        break
                    except zmq.Again:
                        sock.poll(100, zmq.POLLOUT)
                self.sent += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 120.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def die(self) -> None:
        """The detector dies: its socket closes, unsent messages are gone."""
        self._stop.set()
        self.wait(5)
        self.sock.close(0)

    def come_back(self) -> None:
        """... and comes back on the same port."""
        self.sock = self._bind(self.address)

    def restart(self) -> None:
        self.die()
        self.come_back()

    def close(self) -> None:
        self.die()


class MegabyteWorker:
    """Returns 1 MiB per event: what a slow reducer must not pile up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any = None) -> Any:
        if "cam" not in event.streams:
            return None
        block = np.full(1 << 17, float(event.event_number))  # 1 MiB of float64
        return {"event": event.event_number, "block": block}


class SlowReducer:
    """20 ms per result: slower than two workers produce them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {"events": 0, "checksum": 0.0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        time.sleep(0.02)  # the analysis' cost, simulated
        self.publish["events"] += 1
        self.publish["checksum"] += float(result.payload["block"][0])
