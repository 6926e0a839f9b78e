"""A scan's phases, the plan of an arm, and when a scan is complete: pure decisions.

The scheduler keeps the sockets and messages; what it decides about a scan lives here, so it
can be tested from tables without a process in sight.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tango_dranspose.core.assignment import NotEnoughWorkers, WorkerSpec, check_workers
from tango_dranspose.core.triggermap import TriggerMap


class Phase(str, enum.Enum):
    """Where a scan is; the last five are final."""

    IDLE = "idle"
    ARMING = "arming"
    RUNNING = "running"
    FINISHING = "finishing"
    FINISHED = "finished"  # every event processed and reduced
    STOPPED = "stopped"  # a user ended it early
    ABORTED = "aborted"  # a user ended it early, marked as unusable
    FAILED = "failed"  # it could not go on (a component died, arming failed)
    INTERRUPTED = "interrupted"  # it ran to its end, but an upstream started a new series

    def __str__(self) -> str:
        return self.value

    @property
    def active(self) -> bool:
        return self in ACTIVE

    @property
    def final(self) -> bool:
        return self in FINAL


ACTIVE = frozenset({Phase.ARMING, Phase.RUNNING, Phase.FINISHING})
FINAL = frozenset({Phase.FINISHED, Phase.STOPPED, Phase.ABORTED, Phase.FAILED, Phase.INTERRUPTED})

# Every allowed move; anything else is a bug in the caller (PhaseError).
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.ARMING}),
    Phase.ARMING: frozenset({Phase.RUNNING, Phase.FINISHING, Phase.FAILED}),
    Phase.RUNNING: frozenset({Phase.FINISHING, Phase.FAILED}),
    Phase.FINISHING: frozenset(
        {Phase.FINISHED, Phase.STOPPED, Phase.ABORTED, Phase.FAILED, Phase.INTERRUPTED}
    ),
    **{final: frozenset() for final in FINAL},
}

# How a scan that is finishing for a reason ends.
END_OF: Mapping[str, Phase] = {
    "complete": Phase.FINISHED,
    "stopped": Phase.STOPPED,
    "aborted": Phase.ABORTED,
    "failed": Phase.FAILED,
    "interrupted": Phase.INTERRUPTED,
}


class PhaseError(RuntimeError):
    """A move the transition table does not allow."""


def advance(current: Phase, target: Phase) -> Phase:
    if target not in TRANSITIONS[current]:
        raise PhaseError(f"a scan cannot go from {current.value} to {target.value}")
    return target


class ArmRefused(ValueError):
    """The scan cannot be armed; the text says why, in one sentence."""


@dataclass(frozen=True)
class ArmPlan:
    """Who serves an armed scan."""

    ingesters: dict[str, list[str]]  # ingester -> the map's streams it serves
    workers: list[WorkerSpec]
    reducer: str

    @property
    def owner(self) -> dict[str, str]:
        return {s: ing for ing, streams in self.ingesters.items() for s in streams}


def plan_arm(
    tmap: TriggerMap,
    ingesters: Mapping[str, Sequence[str]],
    workers: Sequence[WorkerSpec],
    reducers: Sequence[str],
) -> ArmPlan:
    """Check a map against the live services (ingester -> its streams, workers, reducers)."""
    owners: dict[str, str] = {}
    for name, streams in ingesters.items():
        for stream in streams:
            if stream in tmap.streams and stream in owners:
                raise ArmRefused(
                    f"stream {stream} is served by two ingesters, {owners[stream]} and "
                    f"{name}: remove it from one of them"
                )
            owners.setdefault(stream, name)
    missing = [s for s in tmap.streams if s not in owners]
    if missing:
        raise ArmRefused(
            f"no ingester serves stream(s) {', '.join(missing)} "
            f"(available: {', '.join(sorted(owners)) or 'none'})"
        )
    if not reducers:
        raise ArmRefused("no reducer is running")
    if len(reducers) > 1:
        raise ArmRefused(
            f"several reducers are running ({', '.join(sorted(reducers))}); a pipeline has one"
        )
    try:
        check_workers(tmap, workers)
    except NotEnoughWorkers as exc:
        raise ArmRefused(str(exc)) from None
    served: dict[str, list[str]] = {}
    for stream in tmap.streams:
        served.setdefault(owners[stream], []).append(stream)
    return ArmPlan(served, list(workers), reducers[0])


def is_complete(
    assigned_all: bool,
    in_flight: int,
    last_event_of: Mapping[str, int],
    ingested: Mapping[str, int],
) -> bool:
    """Every event assigned and processed, and every ingester past its last event."""
    if not assigned_all or in_flight:
        return False
    return all(ingested.get(ing, -1) >= last for ing, last in last_event_of.items())


MAX_SCAN_ID = 200  # characters; file names of 255 bytes leave room for the suffixes


def check_scan_id(scan_id: str) -> None:
    """Raise ArmRefused unless ``scan_id`` is a name, never a path.

    A scan id becomes part of file names (``SCANID_processed.h5``, the ingesters'
    ``dump_DEVICE_SCANID.cbors``); a separator, a ``..`` or a control character in it would
    place those files elsewhere or make their names unreadable.
    """
    rule = (
        f"a scan id is a name of 1 to {MAX_SCAN_ID} characters without '/', '\\', '..' or "
        "control characters"
    )
    if not isinstance(scan_id, str) or not scan_id:
        raise ArmRefused(f"scan_id {scan_id!r} is refused: it is empty ({rule})")
    shown = repr(scan_id if len(scan_id) <= 60 else scan_id[:60] + "...")
    if len(scan_id) > MAX_SCAN_ID:
        why = f"it has {len(scan_id)} characters"
    elif "/" in scan_id or "\\" in scan_id:
        why = "it contains a path separator"
    elif ".." in scan_id:
        why = "it contains '..'"
    elif not scan_id.isprintable():
        # NUL, newlines, escapes, and the invisible format characters (such as a right-to-left
        # override) that would make a file name read differently than it is.
        why = "it contains a control character"
    else:
        return
    raise ArmRefused(f"scan_id {shown} is refused: {why} ({rule})")
