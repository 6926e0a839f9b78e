"""Scheduler: owns the armed map, hands out work in batches, keeps the completion ledger.

Services register on its ROUTER socket. ``arm`` checks the map against the registered
ingesters and workers (``core.scan.plan_arm``), arms every service, and waits for all of them.
Then assignments flow: each worker holds a window of pending events (its slots); as it reports
events done, the assigner binds further events, and the new assignments go out in one message
per service. There is no round trip per event. The scan ends when every event is processed,
every ingester has passed its last event and the reducer has reduced every result; or on
stop/abort; or when it cannot go on (``runtime.recovery``: what a dead component changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from tango_dranspose.core.assignment import Assigner, WorkerSpec
from tango_dranspose.core.ledger import load_ledger
from tango_dranspose.core.parameters import ParameterError
from tango_dranspose.core.scan import (
    ArmRefused,
    Phase,
    check_scan_id,
    is_complete,
    plan_arm,
)
from tango_dranspose.core.triggermap import TriggerMap, TriggerMapError
from tango_dranspose.runtime import transport
from tango_dranspose.runtime.messages import (
    Arm,
    Armed,
    Assign,
    Done,
    Expect,
    Finish,
    Finished,
    Hello,
    Ingested,
    Message,
    ParametersApplied,
    ProtocolError,
    Reduced,
    Seen,
    SetParameters,
    Status,
    Welcome,
    encode_parameters,
    load_to_scheduler,
)
from tango_dranspose.runtime.paramstore import ParameterStore, Segment, Version
from tango_dranspose.runtime.recovery import Recovery
from tango_dranspose.runtime.scanstate import Component, ScanState, scan_summary

log = logging.getLogger("tango_dranspose.scheduler")

ARM_TIMEOUT = 15.0
FINISH_WAIT = 1.0  # seconds a stopped scan waits for the ingesters' last counts
ArmError = ArmRefused  # the name clients know


class Scheduler:
    """The pipeline's engine; embeddable (the controller device) or its own process."""

    def __init__(
        self, bind: str = "tcp://127.0.0.1:0", *, window: int = 32, on_new_series: str = "end"
    ) -> None:
        if on_new_series not in ("end", "fail"):
            raise ValueError(f"on_new_series must be 'end' or 'fail', got {on_new_series!r}")
        self.bind_address = bind
        self.window = window
        self.on_new_series = on_new_series
        self.components: dict[str, Component] = {}
        self.scan: ScanState | None = None
        self.history: list[dict[str, Any]] = []
        self.protocol_errors = 0
        self.internal_errors = 0  # messages or callbacks whose handling failed (each logged)
        self.on_change: Callable[[], None] | None = None
        self.params = ParameterStore()
        self._serial = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self.address = ""
        self.registered = asyncio.Condition()
        # Replaced (after being set) on every change, so waiters wake once per change.
        self._progress = asyncio.Event()
        self.recovery = Recovery(self)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.router = transport.socket(zmq.ROUTER, hwm=100_000)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A service restarted under the same name takes over its identity at once.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.address = transport.bind(self.router, self.bind_address)
        self._probe: zmq.Socket[Any] = zmq.Socket.shadow(self.router.underlying)
        self._tasks.append(asyncio.ensure_future(self._loop()))
        self._tasks.append(asyncio.ensure_future(self.recovery.watch()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.router.close(0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            self.internal_errors += 1
            log.error("task failed: %r", task.exception(), exc_info=task.exception())

    async def wait_for(self, kinds: dict[str, int], timeout: float = 30.0) -> None:
        """Until at least ``kinds`` (e.g. {"worker": 2}) components are registered and alive."""

        def enough() -> bool:
            have: dict[str, int] = {}
            for c in self.components.values():
                if c.alive:
                    have[c.kind] = have.get(c.kind, 0) + 1
            return all(have.get(k, 0) >= n for k, n in kinds.items())

        async with self.registered:
            await asyncio.wait_for(self.registered.wait_for(enough), timeout)

    # -- messages ------------------------------------------------------------------------

    async def _send(self, name: str, msg: Message) -> bool:
        try:
            await self.router.send_multipart([name.encode(), msg.dump()])
            return True
        except zmq.ZMQError as exc:
            comp = self.components.get(name)
            if comp is None or not comp.lost:
                log.warning("cannot reach %s: %s", name, exc)
            return False

    async def _loop(self) -> None:
        router = transport.FastSocket(self.router)
        while True:
            for frames in await router.recv_batch():
                await self._receive(frames[0].bytes, frames[-1].bytes)

    async def _receive(self, ident: bytes, raw: bytes) -> None:
        name = ident.decode(errors="replace")
        try:
            msg = load_to_scheduler(raw)
        except ProtocolError as exc:
            self.protocol_errors += 1
            log.warning("from %s: %s", name, exc)
            return
        comp = self.components.get(name)
        if (comp is None or comp.lost) and not isinstance(msg, Hello):
            # Unknown, or declared dead: it must introduce itself (again) to take part.
            await self._send(name, Welcome(scan=-1))
            return
        if comp is not None:
            comp.last_seen = time.monotonic()
        try:
            await self._handle(name, msg)
        except Exception:
            self.internal_errors += 1
            log.exception("handling %s from %s failed", type(msg).__name__, name)
        self._changed()

    async def _handle(self, name: str, msg: Message) -> None:
        scan = self.scan
        if isinstance(msg, Hello):
            await self._hello(name, msg)
            return
        if isinstance(msg, Status):
            self.components[name].counters = msg.counters
            await self._send(name, Seen())
            return
        if scan is None or getattr(msg, "scan", None) != scan.number:
            return  # late news about an earlier scan
        if isinstance(msg, ParametersApplied):
            for segment in scan.segments:
                if segment.version.number == msg.version:
                    segment.applied.setdefault(name, msg.event)
            return
        if isinstance(msg, Armed):
            await self._armed(scan, name, msg)
        elif isinstance(msg, Done):
            await self._on_done(scan, name, msg)
        elif isinstance(msg, Ingested):
            scan.ingested[name] = msg.upto
            await self._ledger_update(scan, msg.ledger)
            await self._check_complete(scan)
        elif isinstance(msg, Reduced):
            scan.results_reduced = msg.results
            scan.reducer_errors = msg.errors
            if msg.last_error:
                scan.last_error = msg.last_error
            confirmed = sum(scan.inflight.confirm(w, seq) for w, seq in msg.received.items())
            if confirmed and scan.state is Phase.RUNNING:
                await self._pump(scan)  # frees frames, and may complete the scan
        elif isinstance(msg, Finished):
            if msg.kind == "reducer":
                scan.reducer_summary = msg.summary
                scan.results_reduced = msg.summary.get("results", scan.results_reduced)
                scan.duplicates = int(msg.summary.get("duplicates", 0) or 0)
                self._end(scan)
            elif msg.kind == "ingester":
                scan.finished_ingesters.add(name)
                await self._ledger_update(scan, msg.summary.get("ledger", {}))

    async def _hello(self, name: str, msg: Hello) -> None:
        old = self.components.get(name)
        if old is not None and not old.lost and old.pid and msg.pid and old.pid != msg.pid:
            await self.recovery.lose(old, "it restarted")
        self.components[name] = Component(
            msg.kind,
            name,
            msg.address,
            msg.streams,
            msg.tags,
            msg.parameters,
            msg.payload,
            msg.pid,
        )
        try:
            self.params.describe_from(msg.parameters)
        except ValueError as exc:
            log.warning("%s %s describes parameters badly: %s", msg.kind, name, exc)
        log.info("%s %s registered (%s)", msg.kind, name, msg.address or ", ".join(msg.streams))
        await self._send(name, Seen())
        async with self.registered:
            self.registered.notify_all()
        scan = self.scan
        if msg.kind == "worker" and scan is not None and scan.state is Phase.RUNNING:
            await self.recovery.invite(scan, name)

    async def _armed(self, scan: ScanState, name: str, msg: Armed) -> None:
        if name in scan.joining:
            await self.recovery.joined(scan, name, msg)
            return
        if msg.ok:
            scan.armed.add(name)
            if msg.tick_interval:
                scan.tick_interval = msg.tick_interval
        else:
            scan.arm_errors[name] = msg.error or "refused"
        self._check_armed(scan)

    def _check_armed(self, scan: ScanState) -> None:
        if len(scan.armed) + len(scan.arm_errors) >= len(self._participants(scan)):
            scan.armed_event.set()

    # -- arming --------------------------------------------------------------------------

    def _participants(self, scan: ScanState) -> list[str]:
        return [*scan.ingesters, *scan.workers, scan.reducer]

    def _alive(self, kind: str) -> list[Component]:
        return [c for c in self.components.values() if c.kind == kind and c.alive]

    async def arm(
        self,
        trigger_map: TriggerMap | dict[str, Any] | str,
        *,
        scan_id: str | None = None,
        parameters: dict[str, bytes] | None = None,
        metadata: dict[str, Any] | None = None,
        record_dir: str | None = None,
    ) -> str:
        """Arm a scan; returns its id. Raises :class:`ArmError` saying what is wrong."""
        if self.scan is not None and self.scan.state.active:
            raise ArmError(f"scan {self.scan.scan_id} is still {self.scan.state}; stop it first")
        if scan_id is not None:
            check_scan_id(scan_id)  # it names files: a name, never a path (ArmRefused)
        try:
            if isinstance(trigger_map, TriggerMap):
                tmap = trigger_map
            else:
                # Off the loop: a large map takes seconds to compile, and meanwhile the
                # scheduler must go on hearing the services (or they would look dead).
                raw = trigger_map
                tmap = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: TriggerMap.from_json(raw).prepare()
                )
        except TriggerMapError as exc:
            raise ArmError(f"invalid trigger map: {exc}") from None
        if self.scan is not None and self.scan.state.active:
            raise ArmError(f"scan {self.scan.scan_id} is still {self.scan.state}; stop it first")
        workers = self._alive("worker")
        specs = [WorkerSpec(w.name, frozenset(w.tags)) for w in workers]
        plan = plan_arm(
            tmap,
            {ing.name: ing.streams for ing in self._alive("ingester")},
            specs,
            [r.name for r in self._alive("reducer")],
        )
        assigner = Assigner(tmap, specs, slots=self.window)
        try:
            self.params.update(dict(parameters or {}), allow_unknown=True)
        except ParameterError as exc:
            raise ArmError(str(exc)) from None
        self._serial += 1
        version = self.params.current
        meta = dict(metadata or {})
        scan = ScanState(
            number=self._serial,
            scan_id=scan_id or uuid.uuid4().hex[:12],
            tmap=tmap,
            metadata=meta,
            parameters_hash=version.hash,
            ingesters=plan.ingesters,
            workers=[w.name for w in workers],
            reducer=plan.reducer,
            window=self.window,
            assigner=assigner,
        )
        scan.segments.append(Segment(version, 0))
        self.scan = scan
        reducer = self.components[plan.reducer]
        addresses = {w.name: w.address or "" for w in workers}
        scan.arm_base = {
            "scan": scan.number,
            "scan_id": scan.scan_id,
            "descriptions": [d.model_dump(mode="json") for d in self.params.descriptions.values()],
            "metadata": meta,
            "window": self.window,
            "total_events": len(tmap),
        }
        base = {**scan.arm_base, **self._version_fields(version)}
        for ing_name, streams in plan.ingesters.items():
            await self._send(
                ing_name, Arm(**base, workers=addresses, streams=streams, record_dir=record_dir)
            )
        for worker in workers:
            await self._send(worker.name, Arm(**base, reducer=reducer.address))
        payloads = sorted({w.payload for w in workers if w.payload})
        reducer_meta = {**meta, "worker_payloads": payloads, "trigger_map": tmap.to_json()}
        await self._send(scan.reducer, Arm(**{**base, "metadata": reducer_meta}))
        try:
            await asyncio.wait_for(scan.armed_event.wait(), ARM_TIMEOUT)
        except asyncio.TimeoutError:
            silent = [
                p
                for p in self._participants(scan)
                if p not in scan.armed and p not in scan.arm_errors
            ]
            scan.arm_errors.update({p: "did not answer" for p in silent})
        if scan.state is not Phase.ARMING:
            raise ArmError(f"scan {scan.scan_id} was stopped while arming")
        if scan.arm_errors:
            scan.to(Phase.FAILED)
            scan.done_event.set()
            await self._broadcast(scan, Finish(scan=scan.number, reason="aborted"))
            errors = "; ".join(f"{k}: {v}" for k, v in sorted(scan.arm_errors.items()))
            scan.failure = f"arming failed: {errors}"
            raise ArmError(scan.failure)
        scan.to(Phase.RUNNING)
        scan.started = time.monotonic()
        log.info("armed scan %s: %s", scan.scan_id, tmap.describe())
        await self._pump(scan)
        self._changed()
        return scan.scan_id

    @staticmethod
    def _version_fields(version: Version) -> dict[str, Any]:
        return {
            "parameters": encode_parameters(dict(version.values)),
            "parameters_hash": version.hash,
            "parameters_version": version.number,
        }

    # -- assignment ----------------------------------------------------------------------

    async def _pump(self, scan: ScanState) -> None:
        assigner = scan.assigner
        if assigner is None or scan.state is not Phase.RUNNING:
            return
        to_ingesters: dict[str, list[tuple[int, dict[str, list[str]]]]] = {}
        to_workers: dict[str, list[tuple[int, list[str], bool]]] = {}
        stream_owner = {s: ing for ing, ss in scan.ingesters.items() for s in ss}
        inflight = scan.inflight
        now = time.monotonic()
        while True:
            a = assigner.next()
            if a is None:
                break
            scan.assigned += 1
            per_ing: dict[str, dict[str, list[str]]] = {}
            per_worker: dict[str, list[str]] = {}
            for stream, workers in a.streams.items():
                per_ing.setdefault(stream_owner[stream], {})[stream] = list(workers)
                for w in workers:
                    per_worker.setdefault(w, []).append(stream)
            for ing, routes in per_ing.items():
                to_ingesters.setdefault(ing, []).append((a.event_number, routes))
                scan.last_event_of[ing] = a.event_number
            tick_worker = None
            if scan.tick_interval and per_worker and now >= scan.next_tick:
                tick_worker = next(iter(per_worker))
                scan.next_tick = now + scan.tick_interval
            for w, streams in per_worker.items():
                to_workers.setdefault(w, []).append((a.event_number, streams, w == tick_worker))
            if not inflight.add(a):
                scan.completed += 1  # only discards or gaps: nothing to process
        release = inflight.release()
        if to_ingesters or release > scan.released:
            scan.released = release
            # Built by us and well-typed: skip validating thousands of entries per batch.
            for ing in scan.ingesters:
                routes_batch = to_ingesters.get(ing, [])
                if routes_batch or ing not in scan.dead:
                    await self._send(
                        ing,
                        Assign.model_construct(
                            scan=scan.number, events=routes_batch, release=release
                        ),
                    )
        for w, expect_batch in to_workers.items():
            await self._send(
                w, Expect.model_construct(scan=scan.number, events=expect_batch, origins={})
            )
        await self._check_complete(scan)

    async def _on_done(self, scan: ScanState, worker: str, msg: Done) -> None:
        assert scan.assigner is not None
        inflight = scan.inflight
        known = 0
        for event, has_result, seq in msg.events:
            done = inflight.done(event, worker, has_result, seq)
            if not done.known:
                continue
            known += 1
            if done.completed:
                scan.completed += 1
            if done.new_result:
                scan.results_expected += 1
        scan.lose(msg.lost, "frames no longer held for re-dispatch")
        scan.lose(msg.results_lost, "results not delivered: the reducer was gone")
        comp = self.components.get(worker)
        if comp is not None:
            comp.counters["errors"] = msg.errors
            if msg.last_error:
                comp.counters["last_error"] = msg.last_error
                scan.last_error = f"{worker}: {msg.last_error}"
        if scan.state is Phase.RUNNING:
            if known and worker in scan.workers:
                scan.assigner.ready(worker, known)
            scan.rate.update(scan.completed)
            await self._pump(scan)

    async def _ledger_update(self, scan: ScanState, raw: dict[str, Any]) -> None:
        for stream, led in load_ledger(raw).items():
            scan.ledgers[stream] = led
            if led.upstream_error and led.upstream_error != scan.upstream_errors.get(stream):
                scan.upstream_errors[stream] = led.upstream_error
                scan.last_error = f"stream {stream}: {led.upstream_error}"
            if led.interrupted_at is not None and stream not in scan.interrupted:
                await self.recovery.interrupted(scan, stream, led.interrupted_at)
        if scan.state.final:
            scan.complete_ledger()  # late counts of an ended scan: keep the ledger whole

    async def _check_complete(self, scan: ScanState) -> None:
        if scan.state is not Phase.RUNNING or scan.assigner is None:
            return
        if not is_complete(
            scan.assigner.done, scan.inflight.outstanding, scan.last_event_of, scan.ingested
        ):
            return
        scan.to(Phase.FINISHING)
        scan.end_reason = "complete"
        await self._finish(scan, "complete")

    async def _finish(self, scan: ScanState, reason: str) -> None:
        """Tell everyone; the reducer last, with the ledger once the ingesters' last counts
        are in (a complete scan has them all already)."""
        for name in [*scan.ingesters, *scan.workers]:
            if name not in scan.dead:
                await self._send(name, Finish(scan=scan.number, reason=reason))
        if reason == "complete":
            await self._finish_reducer(scan, reason)
        else:
            self._spawn(self._finish_after_counts(scan, reason))

    async def _finish_after_counts(self, scan: ScanState, reason: str) -> None:
        deadline = time.monotonic() + FINISH_WAIT
        while time.monotonic() < deadline:
            live = [i for i in scan.ingesters if i not in scan.dead]
            if all(i in scan.finished_ingesters for i in live):
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), deadline - time.monotonic())
        await self._finish_reducer(scan, reason)

    async def _finish_reducer(self, scan: ScanState, reason: str) -> None:
        if scan.reducer in scan.dead:
            return
        scan.complete_ledger()
        await self._send(
            scan.reducer,
            Finish(
                scan=scan.number,
                reason=reason,
                expected_results=scan.results_expected,
                ledger={s: led.as_dict() for s, led in scan.ledgers.items()},
                accounting=self.accounting(scan),
            ),
        )

    @staticmethod
    def accounting(scan: ScanState) -> dict[str, Any]:
        """The scan's event-level accounting (beside the per-stream ledger)."""
        return {
            "total_events": len(scan.tmap),
            "completed_events": scan.completed,
            "results_expected": scan.results_expected,
            "redispatched": scan.redispatched,
            "lost_events": dict(scan.lost_events),
            "dead": list(scan.dead),
            "rejoined": list(scan.rejoined),
            "failure": scan.failure,
            "interrupted": dict(scan.interrupted),
        }

    async def _broadcast(self, scan: ScanState, msg: Message) -> None:
        for name in self._participants(scan):
            if name not in scan.dead:
                await self._send(name, msg)

    def _end(self, scan: ScanState) -> None:
        if scan.done_event.is_set():
            return  # a late confirmation of a scan that was ended without it
        scan.complete_ledger()
        if scan.state is Phase.FINISHING:
            scan.to(Recovery.final_phase(scan))
        elif scan.state.active:
            scan.to(Phase.FINISHING)
            scan.to(Phase.FAILED)
        scan.ended = time.monotonic()
        self.history.append(self.summary())
        del self.history[:-20]
        scan.done_event.set()
        log.info("scan %s %s", scan.scan_id, scan.state)

    async def set_parameters(self, values: dict[str, bytes]) -> Version | None:
        """Change parameters; raises ParameterError naming what is wrong.

        During a scan the change applies from the first event not yet assigned: workers and
        the reducer get it now, before any later assignment, and switch at that event.
        Between scans it applies to the next scan. Returns the new version (None: no change).
        """
        scan = self.scan
        running = scan is not None and scan.state is Phase.RUNNING and scan.assigner is not None
        if not running:
            version = self.params.update(values)
            self._changed()
            return version
        assert scan is not None and scan.assigner is not None
        from_event = scan.assigner.next_event
        version = self.params.update(values)
        if version is None:
            return None
        scan.segments.append(Segment(version, from_event))
        msg = SetParameters(
            scan=scan.number,
            version=version.number,
            hash=version.hash,
            parameters=encode_parameters(version.values),
            from_event=from_event,
        )
        for name in [*scan.workers, scan.reducer]:
            await self._send(name, msg)
        log.info(
            "parameters version %d from event %d of %s", version.number, from_event, scan.scan_id
        )
        self._changed()
        return version

    def parameter_summary(self) -> dict[str, Any]:
        """The current values and the versions of the current (or last) scan."""
        scan = self.scan
        cur = self.params.current
        descs = self.params.descriptions
        segments = [seg.describe(descs) for seg in scan.segments] if scan is not None else []
        return {"version": cur.number, "hash": cur.hash, "segments": segments}

    async def stop(self, reason: str = "stopped", grace: float | None = None) -> None:
        """End the current scan now; the reducer still runs ``finish`` with what it has.

        With ``grace``, wait that long for the reducer's confirmation, then end the scan
        anyway (a hung or killed reducer must not keep a scan open).
        """
        scan = self.scan
        if scan is None or not scan.state.active:
            return
        if scan.state is not Phase.FINISHING:
            scan.to(Phase.FINISHING)
            scan.end_reason = reason
            scan.armed_event.set()
            await self._finish(scan, reason)
        reducer = self.components.get(scan.reducer)
        if reducer is None or not reducer.alive:
            self._end(scan)
        if grace is None or scan.done_event.is_set():
            return
        try:
            await asyncio.wait_for(scan.done_event.wait(), grace)
        except asyncio.TimeoutError:
            scan.last_error = f"the reducer did not confirm the end within {grace:.0f} s"
            log.warning("scan %s: %s", scan.scan_id, scan.last_error)
            self._end(scan)

    async def wait(self, timeout: float | None = None) -> ScanState | None:
        scan = self.scan
        if scan is None:
            return None
        await asyncio.wait_for(scan.done_event.wait(), timeout)
        return scan

    # -- observing -----------------------------------------------------------------------

    async def wait_until(self, completed: int, timeout: float = 30.0) -> ScanState:
        """Until the current scan has ``completed`` events done, or has ended."""
        scan = self.scan
        if scan is None:
            raise ArmError("no scan")

        deadline = time.monotonic() + timeout
        while not (scan.completed >= completed or scan.done_event.is_set()):
            await asyncio.wait_for(self._progress.wait(), max(deadline - time.monotonic(), 0.0))
        return scan

    def _changed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                self.internal_errors += 1
                log.exception("change callback failed")

    def dead_components(self) -> list[str]:
        scan = self.scan
        names = self._participants(scan) if scan is not None else list(self.components)
        return [n for n in names if n in self.components and not self.components[n].alive] + [
            n for n in names if n not in self.components
        ]

    def summary(self) -> dict[str, Any]:
        """The current (or last) scan's state, counters and ledger."""
        return {
            **scan_summary(self.scan, self.components, self.dead_components()),
            "parameters": self.parameter_summary(),
            "protocol_errors": self.protocol_errors,
            "internal_errors": self.internal_errors,
        }
