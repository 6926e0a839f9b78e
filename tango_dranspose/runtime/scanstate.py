"""What the scheduler knows about components and the current scan, and how it reports it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tango_dranspose.core.assignment import Assigner
from tango_dranspose.core.triggermap import TriggerMap
from tango_dranspose.runtime.paramstore import Segment
from tango_dranspose.runtime.stats import Rate

DEAD_AFTER = 4.0  # seconds without a message before a component counts as gone


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

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_seen < DEAD_AFTER


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
    state: str = "arming"  # arming | running | finishing | finished | stopped | aborted | failed
    assigner: Assigner | None = None
    armed: set[str] = field(default_factory=set)
    arm_errors: dict[str, str] = field(default_factory=dict)
    armed_event: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[int, int] = field(default_factory=dict)  # event -> workers still processing
    assigned: int = 0
    completed: int = 0
    last_event_of: dict[str, int] = field(default_factory=dict)  # ingester -> last event assigned
    ingested: dict[str, int] = field(default_factory=dict)
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)  # stream -> counts
    results_expected: int = 0
    results_reduced: int = 0
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
        "state": scan.state,
        "total_events": total,
        "assigned_events": scan.assigned,
        "completed_events": scan.completed,
        "progress": 100.0 * scan.completed / total if total else 100.0,
        "event_rate": scan.rate.value()
        if scan.state == "running"
        else (scan.completed / (end - scan.started) if end > scan.started else 0.0),
        "results_expected": scan.results_expected,
        "results_reduced": scan.results_reduced,
        "in_flight": len(scan.pending),
        "worker_errors": sum(
            int(components[w].counters.get("errors", 0) or 0)
            for w in scan.workers
            if w in components
        ),
        "reducer_errors": scan.reducer_errors,
        "last_error": scan.last_error,
        "ledger": scan.ledgers,
        "reducer": scan.reducer_summary,
        "dead": dead,
        "elapsed": end - scan.started,
    }
