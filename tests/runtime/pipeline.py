"""An in-process pipeline for tests: scheduler and services in one event loop, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from tango_dranspose.runtime import transport
from tango_dranspose.runtime.ingester import IngesterService, StreamConfig
from tango_dranspose.runtime.reducer import ReducerService
from tango_dranspose.runtime.scheduler import Scheduler
from tango_dranspose.runtime.worker import WorkerService


@dataclass
class Pipeline:
    scheduler: Scheduler
    ingesters: list[IngesterService]
    workers: list[WorkerService]
    reducer: ReducerService
    sources: dict[str, zmq.asyncio.Socket] = field(default_factory=dict)

    async def send(self, stream: str, messages: Sequence[Sequence[bytes]]) -> None:
        sock = self.sources[stream]
        for m in messages:
            await sock.send_multipart(list(m))


@contextlib.asynccontextmanager
async def pipeline(
    streams: Sequence[tuple[str, str]],
    worker_class: str,
    reducer_class: str,
    *,
    workers: Sequence[Sequence[str]] = (("generic",), ("generic",)),
    window: int = 8,
    search: list[str] | None = None,
    output_dir: str | None = None,
    upstream_hwm: int | None = None,
    source_hwm: int = transport.DEFAULT_HWM,
) -> AsyncIterator[Pipeline]:
    """``streams`` are (name, protocol); each gets a PUSH source bound on a free port."""
    sched = Scheduler(window=window)
    await sched.start()
    sources: dict[str, zmq.asyncio.Socket] = {}
    configs = []
    for name, protocol in streams:
        sock = transport.socket(zmq.PUSH, hwm=source_hwm)
        addr = transport.bind(sock, "tcp://127.0.0.1:0")
        sources[name] = sock
        query = f"?hwm={upstream_hwm}" if upstream_hwm else ""
        configs.append(StreamConfig(name, protocol, "pull+" + addr + query))
    ingesters = [IngesterService(f"ing-{c.name}", sched.address, [c]) for c in configs]
    ws = [
        WorkerService(f"w{i}", sched.address, worker_class, tags=list(tags), search=search)
        for i, tags in enumerate(workers)
    ]
    red = ReducerService(
        "reducer", sched.address, reducer_class, search=search, output_dir=output_dir
    )
    services: list[Any] = [*ingesters, *ws, red]
    for s in services:
        await s.start()
    await sched.wait_for({"ingester": len(ingesters), "worker": len(ws), "reducer": 1}, timeout=10)
    pipe = Pipeline(sched, ingesters, ws, red, sources)
    try:
        yield pipe
    finally:
        for s in services:
            await s.close()
        for sock in sources.values():
            sock.close(0)
        await sched.close()


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))
