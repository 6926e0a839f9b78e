"""What the scheduler does when a component dies, comes back, or an upstream restarts.

* **Detection.** Every service reports every ``STATUS_INTERVAL`` (0.5 s). A component silent
  for longer than a probe interval is probed: a send to its identity fails at once when its
  connection is gone (a killed process), so it is declared dead within a fraction of a
  second. A silent component whose connection still stands (a hung process, a cut network)
  is declared dead after ``DEAD_AFTER`` of its kind. Silence is only judged while the
  scheduler has read everything it was sent and its own loop was not held up: a busy
  scheduler never makes healthy components look dead.
* **A worker** dies: its groups move to live workers (``core.inflight``), the ingesters send
  their frames again, and the scan goes on. No eligible worker left: the scan fails.
* **The reducer or an ingester** dies: the scan fails, naming it and what was lost.
* **A worker comes back** (or a new one registers) during a scan: it is armed and takes work.
* **An upstream starts a new series** inside a scan: the stream ends there; the scan fails or
  goes on to end ``interrupted``, as ``on_new_series`` says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import zmq

from tango_dranspose.core.assignment import NotEnoughWorkers, WorkerSpec, check_workers
from tango_dranspose.core.inflight import NoEligibleWorker
from tango_dranspose.core.scan import END_OF, Phase
from tango_dranspose.runtime.messages import Arm, Armed, Expect, Resend, Seen
from tango_dranspose.runtime.scanstate import DEAD_AFTER, DEAD_AFTER_DEFAULT, Component, ScanState

if TYPE_CHECKING:
    from tango_dranspose.runtime.scheduler import Scheduler

log = logging.getLogger("tango_dranspose.scheduler")

WATCH_INTERVAL = 0.2
PROBE_AFTER = 0.6  # seconds of silence before a component's connection is probed
FAIL_GRACE = 2.5  # seconds a failed scan waits for the reducer to write what it has


class Recovery:
    """The scheduler's fault path (one per scheduler)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler

    # -- detection ---------------------------------------------------------------------------

    async def watch(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            held_up = now - last - WATCH_INTERVAL > 1.0
            last = now
            if held_up:
                # Our own loop was blocked: nobody could be heard meanwhile.
                for comp in self.s.components.values():
                    comp.last_seen = max(comp.last_seen, now - PROBE_AFTER)
                continue
            if int(self.s.router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                continue  # messages not read yet may be the very heartbeats we miss
            for comp in list(self.s.components.values()):
                if comp.lost:
                    continue
                silent = now - comp.last_seen
                if silent > DEAD_AFTER.get(comp.kind, DEAD_AFTER_DEFAULT):
                    await self.lose(comp, f"silent for {silent:.1f} s")
                elif silent > PROBE_AFTER and not self.reachable(comp.name):
                    await self.lose(comp, "its connection closed")

    def reachable(self, name: str) -> bool:
        try:
            self.s._probe.send_multipart([name.encode(), Seen().dump()], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            return exc.errno != zmq.EHOSTUNREACH
        return True

    async def lose(self, comp: Component, why: str) -> None:
        if comp.lost:
            return
        comp.lost = True
        comp.lost_reason = why
        log.warning("%s %s stopped answering: %s", comp.kind, comp.name, why)
        scan = self.s.scan
        if scan is not None and scan.state.active and comp.name in self.s._participants(scan):
            scan.dead.append(comp.name)
            if scan.state is Phase.ARMING:
                scan.arm_errors[comp.name] = f"stopped answering ({why})"
                self.s._check_armed(scan)
            elif comp.kind == "worker":
                await self.worker_lost(scan, comp.name, why)
            elif comp.kind == "reducer":
                missing = max(scan.results_expected - scan.results_reduced, 0)
                await self.fail(
                    scan,
                    f"the reducer {comp.name} stopped answering ({why}); "
                    f"{missing} result(s) not reduced",
                )
            else:
                await self.ingester_lost(scan, comp.name, why)
        self.s._changed()

    # -- a worker died or came back ------------------------------------------------------------

    async def worker_lost(self, scan: ScanState, name: str, why: str) -> None:
        if name in scan.workers:
            scan.workers.remove(name)
        scan.joining.discard(name)
        assigner = scan.assigner
        if scan.state is not Phase.RUNNING or assigner is None:
            return
        live = {
            w: frozenset(self.s.components[w].tags)
            for w in scan.workers
            if w in self.s.components and self.s.components[w].alive
        }
        try:
            # The map as a whole first (the clearer reason), then each group of the dead one.
            check_workers(scan.tmap, [WorkerSpec(w, t) for w, t in live.items()])
            plan = scan.inflight.worker_lost(name, live, {w: assigner.free(w) for w in live})
        except (NoEligibleWorker, NotEnoughWorkers) as exc:
            await self.fail(scan, f"worker {name} stopped answering ({why}) and {exc}")
            return
        assigner.remove_worker(name)
        for (occurrence, constraint), target in plan.rebinds:
            assigner.rebind(occurrence, constraint, target)
        scan.completed += plan.completed
        scan.redispatched += len(plan.moves)
        if plan.results_dropped:
            # Results of broadcast shares that died with the worker: not expected any more.
            scan.results_expected -= plan.results_dropped
            scan.lose(plan.results_dropped, "results of a dead worker's broadcast shares")
        owner = {s: ing for ing, ss in scan.ingesters.items() for s in ss}
        per_ing: dict[str, list[tuple[int, dict[str, list[str]]]]] = {i: [] for i in scan.ingesters}
        per_worker: dict[str, list[tuple[int, list[str], bool]]] = {}
        origins: dict[str, dict[int, str]] = {}
        for move in plan.moves:
            routes: dict[str, dict[str, list[str]]] = {}
            for stream in move.streams:
                routes.setdefault(owner[stream], {})[stream] = [move.worker]
            for ing, r in routes.items():
                per_ing[ing].append((move.event, r))
            per_worker.setdefault(move.worker, []).append((move.event, list(move.streams), False))
            if move.origin != move.worker:
                origins.setdefault(move.worker, {})[move.event] = move.origin
            assigner.take(move.worker, 1)
        addresses = {w: self.s.components[w].address or "" for w in per_worker}
        for ing, events in per_ing.items():
            if ing not in scan.dead:
                await self.s._send(
                    ing, Resend(scan=scan.number, events=events, workers=addresses, dead=[name])
                )
        for worker, expect in per_worker.items():
            await self.s._send(
                worker,
                Expect(scan=scan.number, events=expect, origins=origins.get(worker, {})),
            )
        log.warning(
            "scan %s: worker %s is gone; %d event share(s) sent again to %s, %d broadcast "
            "share(s) given up",
            scan.scan_id,
            name,
            len(plan.moves),
            ", ".join(sorted(per_worker)) or "nobody",
            plan.dropped,
        )
        if plan.partial_groups:
            scan.lose(plan.partial_groups, "groups moved without their oldest events")
        await self.s._pump(scan)

    async def invite(self, scan: ScanState, name: str) -> None:
        """Arm a worker that (re)registered during a running scan."""
        if name in scan.workers or name in scan.joining:
            return
        scan.joining.add(name)
        reducer = self.s.components.get(scan.reducer)
        base = {**scan.arm_base, **self.s._version_fields(self.s.params.current)}
        await self.s._send(name, Arm(**base, reducer=reducer.address if reducer else None))

    async def joined(self, scan: ScanState, name: str, msg: Armed) -> None:
        scan.joining.discard(name)
        comp = self.s.components.get(name)
        if not msg.ok or comp is None or scan.state is not Phase.RUNNING:
            if not msg.ok:
                log.warning("worker %s could not rejoin scan %s: %s", name, scan.scan_id, msg.error)
            return
        assert scan.assigner is not None
        scan.assigner.add_worker(WorkerSpec(name, frozenset(comp.tags)), scan.window)
        scan.workers.append(name)
        scan.rejoined.append(name)
        if name in scan.dead:
            scan.dead.remove(name)
        for ing in scan.ingesters:
            if ing not in scan.dead:
                await self.s._send(
                    ing, Resend(scan=scan.number, workers={name: comp.address or ""})
                )
        log.info("worker %s joined the running scan %s", name, scan.scan_id)
        await self.s._pump(scan)

    # -- failures ----------------------------------------------------------------------------

    async def ingester_lost(self, scan: ScanState, name: str, why: str) -> None:
        streams = scan.ingesters.get(name, [])
        parts = []
        for stream in streams:
            events = scan.not_received_events(stream)
            scan.stream_ledger(stream).not_received_events = events
            parts.append(f"{stream}: events {events or 'none'} not received")
        await self.fail(scan, f"the ingester {name} stopped answering ({why}); " + "; ".join(parts))

    async def interrupted(self, scan: ScanState, stream: str, at: int) -> None:
        scan.interrupted[stream] = at
        what = f"stream {stream}: the upstream started a new series after frame {at}"
        scan.last_error = what
        log.warning("scan %s: %s", scan.scan_id, what)
        if self.s.on_new_series == "fail" and scan.state.active:
            await self.fail(scan, what)

    async def fail(self, scan: ScanState, reason: str) -> None:
        """The scan cannot go on: end it now, keep what the reducer has."""
        if scan.failure is not None or scan.done_event.is_set():
            return
        scan.failure = reason
        scan.last_error = reason
        log.error("scan %s fails: %s", scan.scan_id, reason)
        if scan.state is Phase.ARMING:
            scan.arm_errors.setdefault("scan", reason)
            self.s._check_armed(scan)
            return
        if scan.state is Phase.RUNNING:
            scan.to(Phase.FINISHING)
        scan.end_reason = "failed"
        await self.s._finish(scan, "failed")
        reducer = self.s.components.get(scan.reducer)
        if scan.reducer in scan.dead or reducer is None or not reducer.alive:
            lost = max(scan.results_expected - scan.results_reduced, 0)
            scan.lose(lost, "results not reduced: the reducer was gone")
            self.s._end(scan)
            return
        self.s._spawn(self.end_later(scan, FAIL_GRACE))

    async def end_later(self, scan: ScanState, grace: float) -> None:
        try:
            await asyncio.wait_for(scan.done_event.wait(), grace)
        except asyncio.TimeoutError:
            scan.last_error = f"{scan.failure}; the reducer did not confirm within {grace:.0f} s"
            self.s._end(scan)
            self.s._changed()

    @staticmethod
    def final_phase(scan: ScanState) -> Phase:
        phase = END_OF.get(scan.end_reason or "stopped", Phase.STOPPED)
        if phase is Phase.FINISHED and scan.interrupted:
            return Phase.INTERRUPTED
        return phase
