"""Local replay: run a worker and a reducer payload on captures, in one process.

Without a trigger map, events are formed by event number (dumps) or position (raw captures);
the first and the last event go to every worker, data events round-robin. With a map, its
semantics apply exactly as in a live scan: each stream's frames are consumed in order, ``null``
reads nothing, ``[]`` reads and discards, constraints and broadcasts route through the same
assignment engine the distributed scheduler uses.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tango_dranspose.core.assignment import Assigner, Assignment, WorkerSpec
from tango_dranspose.core.events import EventData, ResultData, StreamData
from tango_dranspose.core.h5tree import write_file
from tango_dranspose.core.parameters import ParameterSet
from tango_dranspose.core.payload import (
    ReducerPayload,
    WorkerPayload,
    close_payload,
    describe_class,
    load_class,
)
from tango_dranspose.core.triggermap import TriggerMap, TriggerMapError
from tango_dranspose.sources.capture import (
    CaptureSource,
    StreamQueues,
    merged_events,
    open_captures,
)

log = logging.getLogger("tango_dranspose.replay")


@dataclass
class ReplayConfig:
    worker: str
    reducer: str
    captures: Sequence[str]
    parameters: dict[str, bytes] = field(default_factory=dict)
    trigger_map: TriggerMap | None = None
    workers: int = 1
    output: Path | None = None
    search: Sequence[Path] = ()
    trust_pickle: bool = False


@dataclass
class PayloadFailure:
    where: str
    event_number: int | None
    error: str
    traceback: str


@dataclass
class StreamLedger:
    delivered: int = 0
    discarded: int = 0
    missing: int = 0  # the map asked for a frame the capture did not have
    unused: int = 0  # the capture had frames the map never asked for
    dropped: int = 0  # upstream messages the framer dropped (malformed, outside the scan)


@dataclass
class ReplaySummary:
    events: int = 0
    results: int = 0
    elapsed: float = 0.0
    streams: dict[str, StreamLedger] = field(default_factory=dict)
    failures: list[PayloadFailure] = field(default_factory=list)
    failure_count: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    unknown_parameters: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: Path | None = None
    skipped_in_output: list[str] = field(default_factory=list)
    publish: Any = None

    @property
    def rate(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failure_count == 0


class _Run:
    """The state of one replay."""

    MAX_KEPT_FAILURES = 20

    def __init__(self, cfg: ReplayConfig) -> None:
        self.cfg = cfg
        search = list(cfg.search) or [Path.cwd()]
        worker_cls = load_class(cfg.worker, search)
        reducer_cls = load_class(cfg.reducer, search)
        descriptions = {**describe_class(worker_cls), **describe_class(reducer_cls)}
        self.params = ParameterSet(descriptions, cfg.parameters)
        values = self.params.as_dict()
        self.names = [f"worker{i}" for i in range(max(cfg.workers, 1))]
        self.workers = {
            name: WorkerPayload(worker_cls, parameters=values, context={}, state=None)
            for name in self.names
        }
        self.reducer = ReducerPayload(reducer_cls, parameters=values, context={}, state=None)
        self.values = values
        self.summary = ReplaySummary(unknown_parameters=self.params.unknown())
        first = next(iter(self.workers.values()))
        interval = first.tick_interval(values)
        self.tick_interval = interval if interval and interval > 0 else None
        self.next_tick = time.monotonic() + (self.tick_interval or 0.0)
        self.next_timer = time.monotonic() + 1.0

    def fail(self, where: str, event: int | None, exc: BaseException) -> None:
        self.summary.failure_count += 1
        tb = traceback.format_exc()
        if len(self.summary.failures) < self.MAX_KEPT_FAILURES:
            self.summary.failures.append(
                PayloadFailure(where, event, f"{type(exc).__name__}: {exc}", tb)
            )
        log.error("%s failed on event %s: %s: %s\n%s", where, event, type(exc).__name__, exc, tb)

    def run_event(self, worker: str, number: int, streams: dict[str, StreamData]) -> None:
        tick = False
        if self.tick_interval is not None:
            now = time.monotonic()
            if now >= self.next_tick:
                tick = True
                self.next_tick = now + self.tick_interval
        try:
            payload = self.workers[worker].process_event(
                EventData(number, streams), self.values, tick
            )
        except Exception as exc:
            self.fail(f"{worker} process_event", number, exc)
            return
        if payload is None:
            return
        result = ResultData(number, worker, payload, self.params.hash)
        self.summary.results += 1
        try:
            self.reducer.process_result(result, self.values)
        except Exception as exc:
            self.fail("reducer process_result", number, exc)
        if self.reducer.has_timer:
            now = time.monotonic()
            if now >= self.next_timer:
                self.run_timer(now)

    def run_timer(self, now: float) -> None:
        try:
            delay = self.reducer.timer(self.values)
        except Exception as exc:
            self.fail("reducer timer", None, exc)
            delay = 1.0
        self.next_timer = now + delay

    def ledger(self, stream: str) -> StreamLedger:
        led = self.summary.streams.get(stream)
        if led is None:
            led = self.summary.streams[stream] = StreamLedger()
        return led

    def finish(self) -> None:
        for name, worker in self.workers.items():
            try:
                worker.finish(self.values)
            except Exception as exc:
                self.fail(f"{name} finish", None, exc)
        if self.reducer.has_timer:
            self.run_timer(time.monotonic())
        try:
            self.reducer.finish(self.values)
        except Exception as exc:
            self.fail("reducer finish", None, exc)
        for worker in self.workers.values():
            try:
                close_payload(worker.instance, {})
            except Exception as exc:
                self.fail("worker close", None, exc)
        try:
            close_payload(self.reducer.instance, {})
        except Exception as exc:
            self.fail("reducer close", None, exc)


def _with_last(it: Iterator[Any]) -> Iterator[tuple[Any, bool]]:
    prev = next(it, None)
    if prev is None:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def _replay_without_map(run: _Run, sources: Sequence[CaptureSource]) -> None:
    names = run.names
    rr = 0
    for (number, streams), last in _with_last(merged_events(sources)):
        run.summary.events += 1
        for stream in streams:
            run.ledger(stream).delivered += 1
        # After a truncation the last complete event is data, not the end message.
        end = last and not any(s.truncated for s in sources)
        if number == 0 or end:
            for name in names:
                run.run_event(name, number, streams)
        else:
            run.run_event(names[rr], number, streams)
            rr = (rr + 1) % len(names)


def _replay_with_map(run: _Run, sources: Sequence[CaptureSource], tmap: TriggerMap) -> None:
    queues = StreamQueues(sources)
    missing = [s for s in tmap.streams if s not in queues.streams]
    if missing:
        raise TriggerMapError(
            f"the map uses stream(s) {', '.join(missing)} that no capture provides "
            f"(captures provide: {', '.join(sorted(queues.streams)) or 'nothing'})"
        )
    assigner = Assigner(tmap, [WorkerSpec(n) for n in run.names], slots=1)
    assignment: Assignment
    for assignment in assigner:
        run.summary.events += 1
        per_worker: dict[str, dict[str, StreamData]] = {}
        for stream, workers in assignment.streams.items():
            data = queues.pull(stream)
            led = run.ledger(stream)
            if data is None:
                led.missing += 1
                continue
            if not workers:
                led.discarded += 1
                continue
            led.delivered += 1
            for w in workers:
                per_worker.setdefault(w, {})[stream] = data
        for worker, streams in per_worker.items():
            run.run_event(worker, assignment.event_number, streams)
    for stream, n in queues.leftover().items():
        run.ledger(stream).unused += n


def run_replay(
    cfg: ReplayConfig, progress: Callable[[ReplaySummary], None] | None = None
) -> ReplaySummary:
    """Replay the captures through the payloads; raises only for unusable input."""
    sources = open_captures(cfg.captures, trust_pickle=cfg.trust_pickle)
    run = _Run(cfg)
    start = time.perf_counter()
    if cfg.trigger_map is None:
        _replay_without_map(run, sources)
    else:
        _replay_with_map(run, sources, cfg.trigger_map)
    run.finish()
    run.summary.elapsed = time.perf_counter() - start
    for source in sources:
        if source.truncated:
            run.summary.warnings.append(source.truncated)
        for reason, n in source.drops.counts.items():
            run.summary.drop_reasons[f"{source.streams[0]}: {reason}"] = n
            run.ledger(source.streams[0]).dropped += n
    with run.reducer.reading() as publish:
        run.summary.publish = publish
        if cfg.output is not None and publish is not None:
            run.summary.skipped_in_output = write_file(cfg.output, publish)
            run.summary.output = cfg.output
    if progress is not None:
        progress(run.summary)
    return run.summary
