"""What the scheduler knows about components and the current scan, and how it reports it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tango_dranspose.core.assignment import Assigner
from tango_dranspose.core.inflight import Inflight
from tango_dranspose.core.ledger import Ledger, StreamLedger, dump_ledger
from tango_dranspose.core.scan import Phase, advance
from tango_dranspose.core.triggermap import TriggerMap
from tango_dranspose.runtime.paramstore import Segment
from tango_dranspose.runtime.stats import Rate

# Seconds without a message before a component counts as gone. A worker's events move to
# another at once, so it is declared sooner; a reducer's or ingester's death fails the scan, so
# a loaded machine gets more benefit of the doubt. A killed process is found sooner still: its
# connection drops, and a probe of it fails (see Scheduler._watch).
DEAD_AFTER = {"worker": 1.8, "ingester": 4.5, "reducer": 4.5}
DEAD_AFTER_DEFAULT = 4.5


@dataclass
class Component:
    kind: str
    name: str
    address: str | None = None
    streams: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    payload: str | None = None
    pid: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    counters: dict[str, Any] = field(default_factory=dict)
    lost: bool = False  # declared dead; it must say hello again to count
    lost_reason: str = ""

    @property
    def alive(self) -> bool:
        # Only the scheduler's watchdog declares death: it knows when the scheduler itself was
        # too busy to hear anyone (a large map being armed), which a clock alone does not.
        return not self.lost


@dataclass
class ScanState:
    number: int
    scan_id: str
    tmap: TriggerMap
    metadata: dict[str, Any]
    parameters_hash: str
    ingesters: dict[str, list[str]]  # ingester -> its streams in the map
    workers: list[str]
    reducer: str
    window: int
    state: Phase = Phase.ARMING
    assigner: Assigner | None = None
    armed: set[str] = field(default_factory=set)
    arm_errors: dict[str, str] = field(default_factory=dict)
    armed_event: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: Inflight = field(default_factory=Inflight)
    assigned: int = 0
    completed: int = 0
    last_event_of: dict[str, int] = field(default_factory=dict)  # ingester -> last event assigned
    ingested: dict[str, int] = field(default_factory=dict)
    ledgers: Ledger = field(default_factory=dict)  # stream -> counts
    results_expected: int = 0
    results_reduced: int = 0
    duplicates: int = 0  # results the reducer dropped as already reduced
    reducer_errors: int = 0
    last_error: str | None = None
    done_event: asyncio.Event = field(default_factory=asyncio.Event)
    reducer_summary: dict[str, Any] = field(default_factory=dict)
    tick_interval: float | None = None
    next_tick: float = 0.0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    rate: Rate = field(default_factory=Rate)
    end_reason: str | None = None
    segments: list[Segment] = field(default_factory=list)  # parameter versions, in order
    # Faults: what died, what came back, what was sent again and what was lost, by reason.
    dead: list[str] = field(default_factory=list)
    rejoined: list[str] = field(default_factory=list)
    redispatched: int = 0  # events (shares) sent again to a live worker
    lost_events: dict[str, int] = field(default_factory=dict)
    failure: str | None = None  # why the scan could not go on
    interrupted: dict[str, int] = field(default_factory=dict)  # stream -> frame of a new series
    arm_base: dict[str, Any] = field(default_factory=dict)  # to arm a worker that rejoins
    released: int = 0  # frames of events below this were settled (the ingesters were told)
    joining: set[str] = field(default_factory=set)  # workers armed to rejoin the running scan
    finished_ingesters: set[str] = field(default_factory=set)
    upstream_errors: dict[str, str] = field(default_factory=dict)  # stream -> last reported

    def to(self, phase: Phase) -> None:
        self.state = advance(self.state, phase)

    def lose(self, n: int, reason: str) -> None:
        if n > 0:
            self.lost_events[reason] = self.lost_events.get(reason, 0) + n

    @property
    def degraded(self) -> bool:
        """Running without something it started with (a worker died, a stream was cut)."""
        return bool(self.dead or self.interrupted or self.lost_events)

    def ledger(self) -> Ledger:
        return self.ledgers

    def stream_ledger(self, stream: str) -> StreamLedger:
        found = self.ledgers.get(stream)
        if found is None:
            found = self.ledgers[stream] = StreamLedger()
        return found

    def complete_ledger(self) -> None:
        """At the end: expected frames per stream, and those that never came."""
        expected = self.tmap.frames_per_stream()
        for stream in self.tmap.streams:
            led = self.stream_ledger(stream)
            led.complete(expected.get(stream, 0))
            if led.not_received and not led.not_received_events:
                led.not_received_events = self.not_received_events(stream)

    def not_received_events(self, stream: str) -> str:
        """Events whose frame of ``stream`` its ingester never confirmed, as ranges."""
        owner = next((ing for ing, ss in self.ingesters.items() if stream in ss), None)
        if owner is None:
            return ""
        upto = self.ingested.get(owner, -1)
        total = len(self.tmap)
        if upto + 1 >= total:
            return ""
        # Only events with a frame of this stream count. Maps can be large and this runs on
        # the scheduler's loop: the walk is bounded, and the text says where it stopped.
        found: list[tuple[int, int]] = []
        for walked, spec in enumerate(self.tmap.iter_events(upto + 1)):
            if walked >= 200_000 or len(found) > 50:
                return _show(found) + f", ... (to event {total - 1})"
            if dict(spec.items()).get(stream) is None:
                continue
            n = spec.event_number
            if found and found[-1][1] == n - 1:
                found[-1] = (found[-1][0], n)
            else:
                found.append((n, n))
        return _show(found)


def _show(found: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in found)


def scan_summary(
    scan: ScanState | None, components: dict[str, Component], dead: list[str]
) -> dict[str, Any]:
    """A scan's state, counters and ledger, as clients and attributes show them."""
    if scan is None:
        return {"state": "idle"}
    total = len(scan.tmap)
    end = scan.ended or time.monotonic()
    return {
        "scan_id": scan.scan_id,
        "state": scan.state.value,
        "total_events": total,
        "assigned_events": scan.assigned,
        "completed_events": scan.completed,
        "progress": 100.0 * scan.completed / total if total else 100.0,
        "reduced_progress": (
            100.0 * scan.results_reduced / scan.results_expected
            if scan.results_expected
            else (100.0 if scan.state.final else 0.0)
        ),
        "event_rate": scan.rate.value()
        if scan.state is Phase.RUNNING
        else (scan.completed / (end - scan.started) if end > scan.started else 0.0),
        "results_expected": scan.results_expected,
        "results_reduced": scan.results_reduced,
        "in_flight": scan.inflight.in_flight,
        "worker_errors": sum(
            int(components[w].counters.get("errors", 0) or 0)
            for w in scan.workers
            if w in components
        ),
        "reducer_errors": scan.reducer_errors,
        "last_error": scan.last_error,
        "ledger": dump_ledger(scan.ledgers),
        "reducer": scan.reducer_summary,
        "dead": dead,
        "elapsed": end - scan.started,
        "redispatched": scan.redispatched,
        "lost_events": dict(scan.lost_events),
        "duplicates": scan.duplicates,
        "lost_components": list(scan.dead),
        "rejoined": list(scan.rejoined),
        "failure": scan.failure,
        "interrupted": dict(scan.interrupted),
        "degraded": scan.degraded,
        "outages": outages(scan, components),
    }


def outages(scan: ScanState, components: dict[str, Component]) -> dict[str, str]:
    """Streams of a running scan whose upstream is gone now (as their ingesters report)."""
    found: dict[str, str] = {}
    if not scan.state.active:
        return found
    for ing, streams in scan.ingesters.items():
        comp = components.get(ing)
        if comp is None or not comp.alive or comp.counters.get("scan") != scan.number:
            continue
        reported = comp.counters.get("outages") or {}
        for stream in streams:
            if stream in reported and stream not in scan.interrupted:
                found[stream] = str(reported[stream])
    return found
