"""Events handed out and not yet settled: who holds which share, and what moves when a worker dies.

Each assigned event has one *share* per worker that received frames of it. A share made for a
constrained virtual worker belongs to that constraint's *group* (one occurrence of a part, one
constraint value): the events a payload may keep state across (events 2n and 2n+1). A group is
*closed* once the map will put no further event in it.

When a worker dies, every group bound to it that is still open or busy moves whole to one live
worker with the tags it asks for (including events already processed, so the new worker sees
the whole group), and every other share it had not acknowledged (broadcasts) is dropped: the
other recipients have it. An event stays *held* (its frames kept by the ingesters) until no
worker owes it anything and its groups are settled; :meth:`Inflight.release` says up to where
the ingesters may forget frames. Results are deduplicated downstream by (event, origin): the
worker a share was first given to.

A worker acknowledges a share with a result only once it handed the result to its socket, with
the sequence number of that results message; the share still counts as *owed* until the
reducer confirms it received that message (:meth:`Inflight.confirm`): a result that died with
its worker, in its queues, is computed again like any other owed share.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from tango_dranspose.core.assignment import Assignment

GroupKey = tuple[int, int]  # (occurrence, constraint)


@dataclass(slots=True)
class Share:
    streams: list[str]
    origin: str
    groups: tuple[GroupKey, ...]
    result_counted: bool = False
    unconfirmed: bool = False  # acknowledged with a result the reducer has not confirmed


@dataclass(slots=True)
class Track:
    shares: dict[str, Share]
    waiting: set[str]
    counted: bool = False  # completed once (progress counts it once, whatever happens later)


@dataclass(slots=True)
class Group:
    worker: str
    tags: frozenset[str]
    events: deque[int] = field(default_factory=deque)  # its events still held, in order
    closed: bool = False
    busy: int = 0  # its events a worker still owes
    unconfirmed: int = 0  # its results not yet confirmed by the reducer
    partial: bool = False  # some events were released before it settled (the hold cap)

    @property
    def settled(self) -> bool:
        return self.closed and self.busy == 0 and self.unconfirmed == 0


@dataclass(frozen=True, slots=True)
class Move:
    """One share sent again: ``streams`` of ``event`` to ``worker``, results as ``origin``'s."""

    event: int
    worker: str
    streams: tuple[str, ...]
    origin: str


@dataclass
class Redispatch:
    moves: list[Move] = field(default_factory=list)
    rebinds: list[tuple[GroupKey, str]] = field(default_factory=list)
    dropped: int = 0  # broadcast shares given up
    results_dropped: int = 0  # results of those that were expected and never confirmed
    completed: int = 0  # events that completed by it
    partial_groups: int = 0  # moved groups of which some events could no longer move


class NoEligibleWorker(Exception):
    """A share of a dead worker cannot go anywhere; the text names the constraint."""


@dataclass
class Done:
    """What one acknowledgement changed."""

    known: bool  # the worker owed this event (else: late, duplicate or unknown)
    completed: bool = False  # the event completed for the first time
    new_result: bool = False  # a result of a share not counted before


class Inflight:
    def __init__(self, max_held: int = 100_000) -> None:
        self.held: OrderedDict[int, Track] = OrderedDict()
        self.groups: dict[GroupKey, Group] = {}
        self.in_flight = 0  # held events some worker still owes
        self.unconfirmed = 0  # shares whose result the reducer has not confirmed
        self.max_held = max_held
        self._next = 0  # one past the last event added
        # Per worker: (results message seq, event) acknowledged and not yet confirmed.
        self._sent: dict[str, deque[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return self.in_flight

    @property
    def outstanding(self) -> int:
        """Shares a worker owes, and results the reducer has not confirmed."""
        return self.in_flight + self.unconfirmed

    def add(self, a: Assignment) -> bool:
        """Track an assigned event; False when no worker got anything (nothing to wait for)."""
        event = a.event_number
        self._next = event + 1
        if not a.workers:
            return False
        keys: dict[str, list[GroupKey]] = {}
        occurrence = a.occurrence
        groups = self.groups
        for constraint, (worker, tags) in a.constraints.items():
            key = (occurrence, constraint)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(worker, tags)
            group.events.append(event)
            group.busy += 1
            keys.setdefault(worker, []).append(key)
        for constraint in a.closing:
            groups[(occurrence, constraint)].closed = True
        streams: dict[str, list[str]] = {w: [] for w in a.workers}
        for stream, workers in a.streams.items():
            for w in workers:
                streams[w].append(stream)
        shares = {w: Share(streams[w], w, tuple(keys.get(w, ()))) for w in a.workers}
        self.held[event] = Track(shares, set(a.workers))
        self.in_flight += 1
        return True

    def done(self, event: int, worker: str, has_result: bool, seq: int = -1) -> Done:
        """``worker`` finished its share of ``event``; its result (if any) went out in its
        results message ``seq``."""
        track = self.held.get(event)
        if track is None or worker not in track.waiting:
            return Done(False)
        track.waiting.discard(worker)
        share = track.shares[worker]
        for key in share.groups:
            self.groups[key].busy -= 1
        out = Done(True)
        if has_result:
            if not share.result_counted:
                share.result_counted = True
                out.new_result = True
            if seq >= 0:
                share.unconfirmed = True
                self.unconfirmed += 1
                for key in share.groups:
                    self.groups[key].unconfirmed += 1
                self._sent.setdefault(worker, deque()).append((seq, event))
        if not track.waiting:
            self.in_flight -= 1
            if not track.counted:
                track.counted = True
                out.completed = True
        return out

    def confirm(self, worker: str, upto: int) -> int:
        """The reducer received ``worker``'s results messages up to ``upto``."""
        sent = self._sent.get(worker)
        confirmed = 0
        while sent and sent[0][0] <= upto:
            _, event = sent.popleft()
            track = self.held.get(event)
            share = track.shares.get(worker) if track is not None else None
            if share is not None and share.unconfirmed:
                self._unconfirm(share)
                confirmed += 1
        return confirmed

    def _unconfirm(self, share: Share) -> None:
        share.unconfirmed = False
        self.unconfirmed -= 1
        for key in share.groups:
            self.groups[key].unconfirmed -= 1

    def owes(self, worker: str) -> list[int]:
        return [e for e, t in self.held.items() if worker in t.waiting]

    def release(self) -> int:
        """Forget settled events from the oldest on; every event below the answer is settled."""
        held, groups = self.held, self.groups
        while held:
            event, track = next(iter(held.items()))
            if track.waiting or any(sh.unconfirmed for sh in track.shares.values()):
                break
            keys = [k for share in track.shares.values() for k in share.groups]
            if not all(groups[k].settled for k in keys):
                if len(held) <= self.max_held:
                    break
                for k in keys:
                    groups[k].partial = True
            held.popitem(last=False)
            for k in keys:
                group = groups[k]
                if group.events and group.events[0] == event:
                    group.events.popleft()
                if group.settled and not group.events:
                    del groups[k]
        return next(iter(held)) if held else self._next

    # -- a worker died -----------------------------------------------------------------------

    def worker_lost(
        self, dead: str, live: Mapping[str, frozenset[str]], free: Mapping[str, int]
    ) -> Redispatch:
        """Move or drop everything ``dead`` owed or may still need; ``live`` maps the workers
        that remain to their tags, ``free`` to their free slots (the emptiest takes a group).
        Raises :class:`NoEligibleWorker` when a group has nowhere to go (nothing changed then).
        """
        out = Redispatch()
        self._sent.pop(dead, None)
        moving = {k for k, g in self.groups.items() if g.worker == dead and not g.settled}
        # Groups that share an event of the dead worker must land on one worker together.
        parent = {k: k for k in moving}

        def root(k: GroupKey) -> GroupKey:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        for track in self.held.values():
            share = track.shares.get(dead)
            if share is None:
                continue
            mine = [k for k in share.groups if k in moving]
            for k in mine[1:]:
                parent[root(k)] = root(mine[0])
        clusters: dict[GroupKey, list[GroupKey]] = {}
        for k in moving:
            clusters.setdefault(root(k), []).append(k)
        targets: dict[GroupKey, str] = {}
        for members in clusters.values():
            tags = frozenset().union(*(self.groups[k].tags for k in members))
            events = sorted({e for k in members for e in self.groups[k].events})
            busy: set[str] = set()
            for e in events:
                busy.update(w for w in self.held[e].shares if w != dead)
            candidates = [n for n, t in live.items() if n != dead and tags <= t and n not in busy]
            if not candidates:
                what = ", ".join(f"constraint {k[1]}" for k in sorted(members))
                raise NoEligibleWorker(
                    f"no live worker can take {what} of {dead} (tags {sorted(tags)}; "
                    f"workers left: {', '.join(sorted(live)) or 'none'})"
                )
            best = max(candidates, key=lambda n: free.get(n, 0))
            for k in members:
                targets[k] = best
                if self.groups[k].partial:
                    out.partial_groups += 1
        for event, track in self.held.items():
            share = track.shares.get(dead)
            if share is None:
                continue
            target = next((targets[k] for k in share.groups if k in targets), None)
            was_waiting = dead in track.waiting
            if share.unconfirmed:
                # Its result may have died in the worker's queues: owed again.
                self._unconfirm(share)
                owed_result = True
            else:
                owed_result = False
            del track.shares[dead]
            track.waiting.discard(dead)
            if target is None:
                if was_waiting:
                    out.dropped += 1
                    for k in share.groups:
                        self.groups[k].busy -= 1
                    if not track.waiting:
                        self.in_flight -= 1
                        if not track.counted:
                            track.counted = True
                            out.completed += 1
                elif owed_result:
                    out.dropped += 1
                    out.results_dropped += 1
                continue
            track.shares[target] = Share(
                share.streams, share.origin, share.groups, share.result_counted
            )
            if not was_waiting:
                for k in share.groups:
                    self.groups[k].busy += 1
                if not track.waiting:
                    self.in_flight += 1
            track.waiting.add(target)
            out.moves.append(Move(event, target, tuple(share.streams), share.origin))
        for k, target in targets.items():
            self.groups[k].worker = target
            out.rebinds.append((k, target))
        return out
