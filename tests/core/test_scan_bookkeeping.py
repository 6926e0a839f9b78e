"""The scan's bookkeeping: phases from their table, and the ledger's invariant under faults.

The property test drives the real Assigner and Inflight over random maps while a simulated
ingester reads a random number of frames (upstreams that end early, messages dropped inside the
scan), workers acknowledge in random order, one dies at a random point (its groups move whole),
and the scan may stop at a random point. Whatever happens, every expected frame of every stream
has exactly one outcome, every event completes at most once, and a group's events are always
processed last by one worker.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tango_dranspose.core.assignment import Assigner, NotEnoughWorkers, WorkerSpec, check_workers
from tango_dranspose.core.inflight import Inflight, NoEligibleWorker
from tango_dranspose.core.ledger import StreamLedger, ranges, totals
from tango_dranspose.core.scan import (
    FINAL,
    TRANSITIONS,
    ArmRefused,
    Phase,
    PhaseError,
    advance,
    is_complete,
    plan_arm,
)
from tango_dranspose.core.triggermap import TriggerMap

# -- phases ------------------------------------------------------------------------------------

ALLOWED = {
    ("idle", "arming"),
    ("arming", "running"),
    ("arming", "finishing"),
    ("arming", "failed"),
    ("running", "finishing"),
    ("running", "failed"),
    ("finishing", "finished"),
    ("finishing", "stopped"),
    ("finishing", "aborted"),
    ("finishing", "failed"),
    ("finishing", "interrupted"),
}


@pytest.mark.parametrize("current", list(Phase))
@pytest.mark.parametrize("target", list(Phase))
def test_every_move_of_the_phase_table(current: Phase, target: Phase) -> None:
    if (current.value, target.value) in ALLOWED:
        assert advance(current, target) is target
    else:
        with pytest.raises(PhaseError, match=f"from {current.value} to {target.value}"):
            advance(current, target)


def test_final_phases_go_nowhere_and_only_they() -> None:
    assert {p for p, moves in TRANSITIONS.items() if not moves} == set(FINAL)
    assert all(p.final != p.active for p in Phase if p is not Phase.IDLE)
    assert str(Phase.INTERRUPTED) == "interrupted"


def test_an_arm_plan_refuses_in_one_sentence() -> None:
    tmap = TriggerMap.from_json({"cam": [[{"constraint": 0}]], "pcap": [[]]})
    w = [WorkerSpec("w0")]
    with pytest.raises(ArmRefused, match="served by two ingesters, a and b"):
        plan_arm(tmap, {"a": ["cam"], "b": ["cam", "pcap"]}, w, ["r"])
    with pytest.raises(ArmRefused, match=r"no ingester serves stream\(s\) pcap"):
        plan_arm(tmap, {"a": ["cam"]}, w, ["r"])
    with pytest.raises(ArmRefused, match="no reducer"):
        plan_arm(tmap, {"a": ["cam", "pcap"]}, w, [])
    with pytest.raises(ArmRefused, match="several reducers"):
        plan_arm(tmap, {"a": ["cam", "pcap"]}, w, ["r", "s"])
    plan = plan_arm(tmap, {"a": ["cam"], "b": ["pcap", "other"]}, w, ["r"])
    assert plan.ingesters == {"a": ["cam"], "b": ["pcap"]}
    assert plan.owner == {"cam": "a", "pcap": "b"}


def test_completion_needs_everything() -> None:
    assert is_complete(True, 0, {"a": 5}, {"a": 5})
    assert not is_complete(False, 0, {"a": 5}, {"a": 5})
    assert not is_complete(True, 1, {"a": 5}, {"a": 5})
    assert not is_complete(True, 0, {"a": 5}, {"a": 4})


def test_ranges_read_well() -> None:
    assert ranges([9, 1, 2, 3, 7, 10]) == "1-3, 7, 9-10"
    assert ranges([]) == ""


def test_end_of_upstream_explains_empty_frames_by_in_scan_drops_only() -> None:
    led = StreamLedger(expected=10, delivered=6)
    led.dropped = {"malformed message": 1, "before the start message": 5}
    led.end_upstream(4)
    assert (led.dropped_slots, led.missing) == (1, 3)
    assert led.balance() == 0
    led.lose(2, "gone")
    assert (led.delivered, led.lost) == (4, {"gone": 2})
    assert led.balance() == 0


# -- the invariant under random faults ---------------------------------------------------------


def cells(draw: Any, n: int, pairs: int) -> list[Any]:
    out = []
    for i in range(n):
        kind = draw(
            st.sampled_from(["pair", "pair", "pair", "none", "discard", "broadcast", "two"])
        )
        if kind == "pair":
            out.append([{"constraint": i // pairs}])
        elif kind == "none":
            out.append(None)
        elif kind == "discard":
            out.append([])
        elif kind == "broadcast":
            out.append([{"constraint": None}])
        else:
            out.append([{"constraint": i // pairs}, {"constraint": 1000 + i}])
    return out


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 30))
    pairs = draw(st.integers(1, 4))
    streams = {s: cells(draw, n, pairs) for s in draw(st.sampled_from([["a"], ["a", "b"]]))}
    return {
        "map": streams,
        "workers": draw(st.integers(2, 4)),
        "slots": draw(st.integers(1, 4)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "frames_short": {s: draw(st.integers(0, 3)) for s in streams},
        "drops": {s: draw(st.integers(0, 2)) for s in streams},
        "kill_at": draw(st.one_of(st.none(), st.integers(0, 60))),
        "stop_at": draw(st.one_of(st.none(), st.integers(0, 80))),
        "max_held": draw(st.integers(1, 50)),
    }


class Sim:
    """One scan: the real assigner and in-flight tracker, a simulated ingester and workers."""

    def __init__(self, sc: dict[str, Any]) -> None:
        self.rng = random.Random(sc["seed"])
        self.tmap = TriggerMap.from_json(sc["map"])
        self.specs = [WorkerSpec(f"w{i}") for i in range(sc["workers"])]
        self.assigner = Assigner(self.tmap, self.specs, slots=sc["slots"])
        self.inflight = Inflight(max_held=sc["max_held"])
        self.expected = self.tmap.frames_per_stream()
        # Frames each upstream will deliver (short of what the map wants: it ended early),
        # and messages it drops inside the scan (each also costs a frame).
        self.available = {
            s: max(self.expected[s] - sc["frames_short"][s] - sc["drops"][s], 0)
            for s in self.tmap.streams
        }
        self.ledger = {
            s: StreamLedger(dropped={"malformed message": sc["drops"][s]} if sc["drops"][s] else {})
            for s in self.tmap.streams
        }
        self.empty = dict.fromkeys(self.tmap.streams, 0)
        self.read = dict.fromkeys(self.tmap.streams, 0)
        self.owes: dict[str, list[int]] = {w.name: [] for w in self.specs}
        self.completed: list[int] = []
        self.processed_by: dict[int, dict[str, str]] = {}  # event -> origin -> last worker
        self.kept: set[int] = set()  # events whose frames the ingester still holds
        self.live = {w.name for w in self.specs}
        self.lost_frames = 0
        self.seq = {w.name: 0 for w in self.specs}  # results messages sent
        self.confirmed = {w.name: -1 for w in self.specs}  # ... and received by the reducer

    def assign(self) -> None:
        while (a := self.assigner.next()) is not None:
            for stream, workers in a.streams.items():
                led = self.ledger[stream]
                if self.read[stream] >= self.available[stream]:
                    self.empty[stream] += 1
                    continue
                self.read[stream] += 1
                if workers:
                    led.delivered += 1
                else:
                    led.discarded += 1
            if self.inflight.add(a):
                self.kept.add(a.event_number)
                for w in a.workers:
                    self.owes[w].append(a.event_number)
            else:
                self.completed.append(a.event_number)

    def ack_some(self) -> None:
        for w in sorted(self.live):
            queue = self.owes[w]
            k = self.rng.randint(0, len(queue))
            for event in queue[:k]:
                track = self.inflight.held.get(event)
                origin = track.shares[w].origin if track and w in track.shares else w
                done = self.inflight.done(event, w, True, self.seq[w])
                self.seq[w] += 1
                if done.known:
                    self.processed_by.setdefault(event, {})[origin] = w
                    self.assigner.ready(w, 1)
                if done.completed:
                    self.completed.append(event)
            del queue[:k]
            # The reducer confirms some of what it received (in order, per worker).
            if self.seq[w] and self.rng.random() < 0.7:
                upto = self.rng.randint(self.confirmed[w], self.seq[w] - 1)
                self.confirmed[w] = upto
                self.inflight.confirm(w, upto)
        below = self.inflight.release()
        self.kept = {e for e in self.kept if e >= below}

    def kill(self) -> bool:
        """A random live worker dies; False when the scan must fail (nowhere to go)."""
        dead = self.rng.choice(sorted(self.live))
        live = {w: frozenset({"generic"}) for w in self.live if w != dead}
        try:
            check_workers(self.tmap, [WorkerSpec(w) for w in live])
            plan = self.inflight.worker_lost(dead, live, {w: self.assigner.free(w) for w in live})
        except (NoEligibleWorker, NotEnoughWorkers):
            return False
        self.live.discard(dead)
        self.owes.pop(dead)
        self.assigner.remove_worker(dead)
        for (occ, c), target in plan.rebinds:
            self.assigner.rebind(occ, c, target)
        for move in plan.moves:
            self.owes[move.worker].append(move.event)
            self.assigner.take(move.worker, 1)
            if move.event not in self.kept:
                self.lost_frames += 1
        self.completed.extend([-1] * plan.completed)  # counted, event numbers not needed
        return True

    def finish(self) -> None:
        for s in self.tmap.streams:
            self.ledger[s].end_upstream(self.empty[s])
            self.ledger[s].complete(self.expected[s])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_expected_frame_has_exactly_one_outcome(sc: dict[str, Any]) -> None:
    try:
        sim = Sim(sc)
    except NotEnoughWorkers:
        return
    failed = False
    for step in range(200):
        if sc["stop_at"] is not None and step == sc["stop_at"]:
            break
        kill = sc["kill_at"] is not None and step == sc["kill_at"] and len(sim.live) > 1
        if kill and not sim.kill():
            failed = True
            break
        sim.assign()
        sim.ack_some()
        if sim.assigner.done and not sim.inflight.outstanding:
            break
    sim.finish()
    for stream, led in sim.ledger.items():
        assert led.balance() == 0, (stream, led)
        assert led.delivered + led.discarded == sim.read[stream]
    total = totals(sim.ledger)
    assert total.expected == sum(sim.expected.values())
    numbered = [e for e in sim.completed if e >= 0]
    assert len(numbered) == len(set(numbered)), "an event completed twice"
    if sc["stop_at"] is None and not failed and sim.assigner.done and not sim.inflight.outstanding:
        assert total.not_received == 0
    # Every group still owed work is bound to a live worker (a dead one's moved whole).
    for group in sim.inflight.groups.values():
        assert group.settled or group.worker in sim.live or failed


def test_a_group_with_nowhere_to_go_names_its_constraint_and_tags() -> None:
    tmap = TriggerMap.from_json({"cam": [[{"constraint": 7, "tags": ["xrd"]}]]}, wrap=False)
    specs = [WorkerSpec("w0", frozenset({"xrd"})), WorkerSpec("w1")]
    assigner = Assigner(tmap, specs, slots=2)
    inflight = Inflight()
    a = assigner.next()
    assert a is not None and inflight.add(a)
    with pytest.raises(
        NoEligibleWorker, match=r"constraint 7 of w0 \(tags \['xrd'\]; workers left: w1"
    ):
        inflight.worker_lost("w0", {"w1": frozenset({"generic"})}, {"w1": 2})
    # Nothing changed: the group is still w0's, the event still owed.
    assert inflight.owes("w0") == [0]


def test_a_dead_worker_s_open_pair_moves_whole_with_its_processed_first_event() -> None:
    tmap = TriggerMap.from_json({"cam": [[{"constraint": 0}], [{"constraint": 0}]]}, wrap=False)
    assigner = Assigner(tmap, [WorkerSpec("w0"), WorkerSpec("w1")], slots=1)
    inflight = Inflight()
    first = assigner.next()
    assert first is not None and first.closing == ()  # the pair is still open
    inflight.add(first)
    owner = first.workers[0]
    assert inflight.done(0, owner, True).completed
    other = "w1" if owner == "w0" else "w0"
    plan = inflight.worker_lost(owner, {other: frozenset({"generic"})}, {other: 1})
    # The processed first event goes again, as its own origin's: its result is a duplicate.
    assert [(m.event, m.worker, m.origin) for m in plan.moves] == [(0, other, owner)]
    assert plan.rebinds == [((0, 0), other)]
    assert not inflight.done(0, other, True).new_result  # counted once already
