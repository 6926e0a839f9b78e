"""Replay through the live services, in one process: scheduler, one ingester per capture file
(a ``file://`` upstream per stream), N workers and the reducer, on one asyncio loop over real
ZeroMQ sockets (tcp://127.0.0.1), exactly as a distributed scan wires them.

This is the measured alternative to the in-process loop of ``runtime.replay``; decision 0015
says why ``tango-dranspose replay`` keeps that loop. It runs the very code a live scan runs,
so it also shows what only a live scan does: results reduced in arrival order, the worker's
batching of results, the ingester's framing of dumps. It takes capture files, read once:
HDF5 inputs and coded sources are events, not upstream messages, and a capture played twice
over (``--loop``) is, to a framer, a second series, which protocols treat differently (STINS
takes it after the first series' end message; the PandA position capture drops everything
after its end).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tango_dranspose.core.capture import CaptureError
from tango_dranspose.core.parameters import ParameterSet
from tango_dranspose.core.payload import describe_class, load_class
from tango_dranspose.core.triggermap import TriggerMap, TriggerMapError
from tango_dranspose.runtime.ingester import IngesterService, StreamConfig
from tango_dranspose.runtime.reducer import ReducerService
from tango_dranspose.runtime.replay import (
    PayloadFailure,
    ReplayConfig,
    ReplaySummary,
    StreamLedger,
    default_trigger_map,
)
from tango_dranspose.runtime.scheduler import Scheduler
from tango_dranspose.runtime.service import Service
from tango_dranspose.runtime.worker import WorkerService
from tango_dranspose.sources.capture import CaptureSource, open_captures
from tango_dranspose.sources.hdf5 import is_hdf5_spec
from tango_dranspose.sources.messages import capture_source

SCAN_ID = "replay"
WINDOW = 32  # the scheduler's default: events each worker holds, as in a live scan


def upstreams(sources: Sequence[CaptureSource]) -> list[list[StreamConfig]]:
    """One ingester's streams per capture file: a ``file://`` upstream for each stream."""
    out = []
    for source in sources:
        path = source.spec.path.resolve()
        if "?" in str(path) or "#" in str(path):
            raise CaptureError(f"{path}: a file upstream cannot name a path with '?' or '#'")
        if source.kind == "raw":
            assert source.framer is not None
            out.append([StreamConfig(source.streams[0], source.framer.typ, f"file://{path}")])
        elif source.kind == "dump":
            configs = []
            for stream in source.streams:
                typ = capture_source(path, stream).typ
                if typ is None:
                    raise CaptureError(f"{path}: stream {stream} has no protocol")
                configs.append(StreamConfig(stream, typ, f"file://{path}?stream={stream}"))
            out.append(configs)
        else:
            raise CaptureError(
                f"{path}: a {source.kind} has no file upstream; convert it to .cbors"
            )
    return out


def run_replay_services(cfg: ReplayConfig, *, window: int = WINDOW) -> ReplaySummary:
    """Replay capture files through the live services; raises only for unusable input
    (including an arm the scheduler refuses, as ``ArmError``)."""
    if cfg.loop != 1:
        raise CaptureError(
            "the live services read each capture once: played again, it is a second series "
            "to the framer, not a continuation"
        )
    if cfg.source is not None or any(is_hdf5_spec(c) for c in cfg.captures):
        raise CaptureError("the live services replay capture files only (no HDF5, no --source)")
    sources = open_captures(cfg.captures, trust_pickle=cfg.trust_pickle)
    if not sources:
        raise CaptureError("nothing to replay: give capture files")
    tmap = cfg.trigger_map if cfg.trigger_map is not None else default_trigger_map(sources)
    provided = {s for source in sources for s in source.streams}
    missing = [s for s in tmap.streams if s not in provided]
    if missing:
        raise TriggerMapError(
            f"the map uses stream(s) {', '.join(missing)} that no input provides "
            f"(inputs provide: {', '.join(sorted(provided)) or 'nothing'})"
        )
    configs = upstreams(sources)
    search = list(cfg.search) or [Path.cwd()]
    descriptions = {
        **describe_class(load_class(cfg.worker, search)),
        **describe_class(load_class(cfg.reducer, search)),
    }
    # Refuse ill-typed values here, as the replay does, not as an arm refused by a service.
    unknown = ParameterSet(descriptions, cfg.parameters).unknown()
    summary = asyncio.run(_run(cfg, tmap, configs, [str(p) for p in search], window))
    summary.unknown_parameters = unknown
    return summary


async def _run(
    cfg: ReplayConfig,
    tmap: TriggerMap,
    configs: list[list[StreamConfig]],
    search: list[str],
    window: int,
) -> ReplaySummary:
    sched = Scheduler("tcp://127.0.0.1:0", window=window)
    await sched.start()
    services: list[Service] = []
    try:
        ingesters = [
            IngesterService(f"ingester{i}", sched.address, streams)
            for i, streams in enumerate(configs)
        ]
        workers = [
            WorkerService(f"worker{i}", sched.address, cfg.worker, search=search)
            for i in range(max(cfg.workers, 1))
        ]
        # The file is written once, at the end, as the replay does.
        reducer = ReducerService(
            "reducer", sched.address, cfg.reducer, search=search, write_interval=None
        )
        services = [*ingesters, *workers, reducer]
        for service in services:
            await service.start()
        await sched.wait_for(
            {"ingester": len(ingesters), "worker": len(workers), "reducer": 1}, timeout=30
        )
        metadata: dict[str, Any] = {}
        if cfg.output is not None:
            # -o replaces an existing file, as the replay does; a live arm must say so.
            metadata = {"output": str(cfg.output.absolute()), "overwrite": True}
        start = time.perf_counter()
        await sched.arm(tmap, scan_id=SCAN_ID, parameters=dict(cfg.parameters), metadata=metadata)
        await sched.wait()
        elapsed = time.perf_counter() - start
        return _summary(sched.summary(), workers, reducer, cfg, elapsed)
    finally:
        for service in services:
            await service.close()
        await sched.close()


def _summary(
    status: dict[str, Any],
    workers: Sequence[WorkerService],
    reducer: ReducerService,
    cfg: ReplayConfig,
    elapsed: float,
) -> ReplaySummary:
    s = ReplaySummary(elapsed=elapsed)
    s.events = int(status.get("completed_events", 0))
    s.results = int((status.get("reducer") or {}).get("results", status["results_reduced"]))
    for stream, led in status.get("ledger", {}).items():
        dropped = dict(led.get("dropped") or {})
        s.streams[stream] = StreamLedger(
            delivered=led["delivered"],
            discarded=led["discarded"],
            missing=led["missing"],
            dropped=sum(dropped.values()),
        )
        for reason, n in dropped.items():
            s.drop_reasons[f"{stream}: {reason}"] = n
    # The services count failures and keep the last one each; tracebacks are in the log.
    for w in workers:
        if w.errors:
            s.failure_count += w.errors
            s.failures.append(PayloadFailure(w.name, None, w.last_error or "", ""))
    failed = reducer.errors + reducer.rejected
    if failed:
        s.failure_count += failed
        s.failures.append(PayloadFailure("reducer", None, reducer.last_error or "", ""))
    if status.get("state") != "finished":
        s.warnings.append(f"the scan ended {status.get('state')}: {status.get('failure') or ''}")
    with reducer.publish() as tree:
        s.publish = tree
    if cfg.output is not None and reducer.last_output:
        s.output = cfg.output
    return s
