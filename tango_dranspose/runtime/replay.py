"""Local replay: run a worker and a reducer payload on captures, in one process.

Inputs are capture files, HDF5 files and coded sources (``--source module:Class``), merged by
event number; ``loop`` repeats them with increasing event numbers. Without a trigger map the
first event goes to every worker and the others round-robin, as dranspose's replay does. With a
map, its semantics apply exactly as in a live scan: each stream's frames are consumed in order,
``null`` reads nothing, ``[]`` reads and discards, constraints and broadcasts route through the
same assignment engine the distributed scheduler uses.

Every result travels from worker to reducer through the result codec, as it does between
processes: the reducer gets a copy, never the object the worker may still change, so a replay
reduces exactly what a live scan would, whatever the number of workers.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tango_dranspose.core.assignment import Assigner, Assignment, WorkerSpec
from tango_dranspose.core.capture import CaptureError
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
from tango_dranspose.core.resultcodec import (
    ClassAllowList,
    ResultDecodeError,
    ResultEncodeError,
)
from tango_dranspose.core.resultcodec import decode as decode_result
from tango_dranspose.core.resultcodec import encode as encode_result
from tango_dranspose.core.triggermap import TriggerMap, TriggerMapError
from tango_dranspose.sources.capture import open_captures
from tango_dranspose.sources.generators import (
    CodeSource,
    EventSource,
    FrameQueues,
    LoopedSource,
    check_unique_streams,
    merged_events,
    repeated,
)
from tango_dranspose.sources.hdf5 import Hdf5Source, Hdf5Spec, is_hdf5_spec

log = logging.getLogger("tango_dranspose.replay")

# Immutable results the codec returns unchanged (exact types: subclasses may carry more); they
# skip the round trip, which costs more than the rest of a trivial event. Not str: the codec
# refuses lone surrogates, and so must the replay.
_SAME_AFTER_CODEC: frozenset[type] = frozenset({int, float, bool, bytes})


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
    source: str | None = None  # a coded source, "package.module:Class"
    loop: int = 1  # read the input this many times over, event numbers increasing


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
        # What the live reducer lets results rebuild: the payload packages' dataclasses and
        # models, our message models and event containers.
        packages = {spec.partition(":")[0].split(".")[0] for spec in (cfg.worker, cfg.reducer)}
        self.allow = ClassAllowList(
            (*sorted(packages), "tango_dranspose.streams", "tango_dranspose.core.events")
        )
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
        if type(payload) not in _SAME_AFTER_CODEC:
            try:
                # bytes(): the copy the network makes, so that the worker may change what it
                # returned (a running sum, a reused buffer) without changing what was reduced.
                wire = [bytes(part) for part in encode_result(payload)]
            except ResultEncodeError as exc:
                self.fail(f"{worker} process_event", number, exc)
                return
            try:
                payload = decode_result(wire, self.allow)
            except ResultDecodeError as exc:
                self.fail("reducer receiving the result", number, exc)
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


def _replay_without_map(run: _Run, sources: Sequence[EventSource], loop: int) -> None:
    # dranspose's replay broadcasts the first event only (the start messages every worker
    # needs); broadcasting another one, e.g. the last, would reduce its result once per worker.
    names = run.names
    rr = 0
    first = True
    for number, streams in repeated(lambda: merged_events(sources), loop):
        run.summary.events += 1
        for stream in streams:
            run.ledger(stream).delivered += 1
        if first:
            first = False
            for name in names:
                run.run_event(name, number, streams)
        else:
            run.run_event(names[rr], number, streams)
            rr = (rr + 1) % len(names)


def _replay_with_map(
    run: _Run, sources: Sequence[EventSource], tmap: TriggerMap, loop: int
) -> None:
    looped = [LoopedSource(s, loop) for s in sources] if loop > 1 else sources
    queues = FrameQueues(looped)
    missing = [s for s in tmap.streams if s not in queues.streams]
    if missing:
        raise TriggerMapError(
            f"the map uses stream(s) {', '.join(missing)} that no input provides "
            f"(inputs provide: {', '.join(sorted(queues.streams)) or 'nothing'})"
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


def default_trigger_map(sources: Sequence[EventSource], loop: int = 1) -> TriggerMap:
    """What a replay without a map does, as a map a live scan can be armed with.

    The first event goes to every (generic) worker, every later event to one worker, and no
    start/end wrap is added: the inputs' own first and last events are in the map like the
    others. Event numbers the inputs skip are events without frames, so that the numbers
    workers see are the replay's. Reads the inputs once; the map has one small part per
    combination of streams present in an event (a sequence names them), so it stays small
    however long the capture is.
    """
    names = sorted({s for source in sources for s in source.streams})
    cells: dict[str, list[dict[str, Any]] | None] = {
        "gap": None,
        "all": [{"constraint": None}],
        "one": [{"constraint": 0}],  # every occurrence of a part binds its constraint afresh
    }
    parts: dict[str, dict[str, list[Any]]] = {}
    sequence: list[str] = []

    def part(kind: str, present: Sequence[str]) -> str:
        key = f"{kind}:{','.join(present)}"
        if key not in parts:
            parts[key] = {s: [cells[kind] if s in present else None] for s in names}
        return key

    following: int | None = None  # the number after the last event seen
    for number, streams in repeated(lambda: merged_events(sources), loop):
        if number > (following or 0):
            sequence.extend([part("gap", ())] * (number - (following or 0)))
        sequence.append(part("all" if following is None else "one", sorted(streams)))
        following = number + 1
    if not sequence:
        return TriggerMap({"empty": {s: [] for s in names or ["none"]}}, [], wrap=False)
    return TriggerMap(parts, sequence, wrap=False)


def open_inputs(cfg: ReplayConfig) -> list[EventSource]:
    """Every input of ``cfg``: capture files, HDF5 files, the coded source; two inputs feeding
    one stream are refused."""
    if cfg.loop < 1:
        raise CaptureError(f"loop must be at least 1, got {cfg.loop}")
    files = [c for c in cfg.captures if not is_hdf5_spec(c)]
    sources: list[EventSource] = [*open_captures(files, trust_pickle=cfg.trust_pickle)]
    names = [str(c) for c in files]
    for text in cfg.captures:
        if is_hdf5_spec(text):
            sources.append(Hdf5Source(Hdf5Spec.parse(text)))
            names.append(text)
    if cfg.source is not None:
        sources.append(CodeSource(cfg.source, list(cfg.search) or [Path.cwd()]))
        names.append(f"source {cfg.source}")
    if not sources:
        raise CaptureError("nothing to replay: give capture or HDF5 files, or a source")
    check_unique_streams(sources, names)
    return sources


def run_replay(
    cfg: ReplayConfig, progress: Callable[[ReplaySummary], None] | None = None
) -> ReplaySummary:
    """Replay the captures through the payloads; raises only for unusable input."""
    sources = open_inputs(cfg)
    run = _Run(cfg)
    start = time.perf_counter()
    if cfg.trigger_map is None:
        _replay_without_map(run, sources, cfg.loop)
    else:
        _replay_with_map(run, sources, cfg.trigger_map, cfg.loop)
    run.finish()
    run.summary.elapsed = time.perf_counter() - start
    for source in sources:
        if source.truncated:
            run.summary.warnings.append(source.truncated)
        for reason, n in source.drops.counts.items():
            run.summary.drop_reasons[f"{source.streams[0]}: {reason}"] = n
            run.ledger(source.streams[0]).dropped += n
        if isinstance(source, CodeSource):
            for failure in source.failures:
                run.summary.failure_count += 1
                if len(run.summary.failures) < run.MAX_KEPT_FAILURES:
                    run.summary.failures.append(
                        PayloadFailure(failure.source, None, failure.error, failure.traceback)
                    )
    with run.reducer.reading() as publish:
        run.summary.publish = publish
        if cfg.output is not None and publish is not None:
            run.summary.skipped_in_output = write_file(cfg.output, publish)
            run.summary.output = cfg.output
    if progress is not None:
        progress(run.summary)
    return run.summary
