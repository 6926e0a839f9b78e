"""Scheduler: owns the armed map, hands out work in batches, keeps the completion ledger.

Services register on its ROUTER socket. ``arm`` checks the map against the registered
ingesters and workers, arms every service, and waits for all of them. Then assignments flow:
each worker holds a window of pending events (its slots); as it reports events done, the
assigner binds further events, and the new assignments go out in one message per service.
There is no round trip per event. The scan ends when every event is processed, every ingester
has passed its last event and the reducer has reduced every result; or on stop/abort.
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

from tango_dranspose.core.assignment import Assigner, NotEnoughWorkers, WorkerSpec
from tango_dranspose.core.parameters import ParameterError
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
from tango_dranspose.runtime.scanstate import Component, ScanState, scan_summary

log = logging.getLogger("tango_dranspose.scheduler")

ARM_TIMEOUT = 15.0


class ArmError(ValueError):
    """The scan cannot be armed; the text says why."""


class Scheduler:
    """The pipeline's engine; embeddable (the controller device) or its own process."""

    def __init__(self, bind: str = "tcp://127.0.0.1:0", *, window: int = 32) -> None:
        self.bind_address = bind
        self.window = window
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

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.router = transport.socket(zmq.ROUTER, hwm=100_000)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A service restarted under the same name takes over its identity at once.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.address = transport.bind(self.router, self.bind_address)
        self._tasks.append(asyncio.ensure_future(self._loop()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.router.close(0)

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

    async def _send(self, name: str, msg: Message) -> None:
        try:
            await self.router.send_multipart([name.encode(), msg.dump()])
        except zmq.ZMQError as exc:
            log.warning("cannot reach %s: %s", name, exc)

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
        if comp is None and not isinstance(msg, Hello):
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
            return
        if isinstance(msg, Status):
            self.components[name].counters = msg.counters
            await self._send(name, Seen())
            return
        if scan is None or getattr(msg, "scan", None) != scan.number:
            return  # late news about an earlier scan
        if isinstance(msg, ParametersApplied):
            if scan is not None and msg.scan == scan.number:
                for segment in scan.segments:
                    if segment.version.number == msg.version:
                        segment.applied.setdefault(name, msg.event)
            return
        if isinstance(msg, Armed):
            if msg.ok:
                scan.armed.add(name)
                if msg.tick_interval:
                    scan.tick_interval = msg.tick_interval
            else:
                scan.arm_errors[name] = msg.error or "refused"
            if len(scan.armed) + len(scan.arm_errors) >= len(self._participants(scan)):
                scan.armed_event.set()
        elif isinstance(msg, Done):
            await self._on_done(scan, name, msg)
        elif isinstance(msg, Ingested):
            scan.ingested[name] = msg.upto
            scan.ledgers.update(msg.ledger)
            await self._check_complete(scan)
        elif isinstance(msg, Reduced):
            scan.results_reduced = msg.results
            scan.reducer_errors = msg.errors
            if msg.last_error:
                scan.last_error = msg.last_error
        elif isinstance(msg, Finished):
            if msg.kind == "reducer":
                scan.reducer_summary = msg.summary
                scan.results_reduced = msg.summary.get("results", scan.results_reduced)
                self._end(scan)
            elif msg.kind == "ingester":
                for stream, counts in msg.summary.get("ledger", {}).items():
                    scan.ledgers[stream] = counts

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
        if self.scan is not None and self.scan.state in ("arming", "running", "finishing"):
            raise ArmError(f"scan {self.scan.scan_id} is still {self.scan.state}; stop it first")
        try:
            tmap = (
                trigger_map
                if isinstance(trigger_map, TriggerMap)
                else TriggerMap.from_json(trigger_map)
            )
        except TriggerMapError as exc:
            raise ArmError(f"invalid trigger map: {exc}") from None
        owners: dict[str, str] = {}
        for ing in self._alive("ingester"):
            for stream in ing.streams:
                if stream in tmap.streams and stream in owners:
                    raise ArmError(
                        f"stream {stream} is served by two ingesters, {owners[stream]} and "
                        f"{ing.name}: remove it from one of them"
                    )
                owners.setdefault(stream, ing.name)
        missing = [s for s in tmap.streams if s not in owners]
        if missing:
            raise ArmError(
                f"no ingester serves stream(s) {', '.join(missing)} "
                f"(available: {', '.join(sorted(owners)) or 'none'})"
            )
        workers = self._alive("worker")
        specs = [WorkerSpec(w.name, frozenset(w.tags)) for w in workers]
        reducers = self._alive("reducer")
        if not reducers:
            raise ArmError("no reducer is running")
        if len(reducers) > 1:
            names = ", ".join(sorted(r.name for r in reducers))
            raise ArmError(f"several reducers are running ({names}); a pipeline has one")
        try:
            assigner = Assigner(tmap, specs, slots=self.window)
        except NotEnoughWorkers as exc:
            raise ArmError(str(exc)) from None
        try:
            self.params.update(dict(parameters or {}), allow_unknown=True)
        except ParameterError as exc:
            raise ArmError(str(exc)) from None
        self._serial += 1
        ingesters: dict[str, list[str]] = {}
        for stream in tmap.streams:
            ingesters.setdefault(owners[stream], []).append(stream)
        version = self.params.current
        raw = dict(version.values)
        params_hash = version.hash
        meta = dict(metadata or {})
        scan = ScanState(
            number=self._serial,
            scan_id=scan_id or uuid.uuid4().hex[:12],
            tmap=tmap,
            metadata=meta,
            parameters_hash=params_hash,
            ingesters=ingesters,
            workers=[w.name for w in workers],
            reducer=reducers[0].name,
            window=self.window,
            assigner=assigner,
        )
        scan.segments.append(Segment(version, 0))
        self.scan = scan
        addresses = {w.name: w.address or "" for w in workers}
        base = {
            "scan": scan.number,
            "scan_id": scan.scan_id,
            "parameters": encode_parameters(raw),
            "parameters_hash": params_hash,
            "parameters_version": version.number,
            "descriptions": [d.model_dump(mode="json") for d in self.params.descriptions.values()],
            "metadata": meta,
            "window": self.window,
            "total_events": len(tmap),
        }
        for ing_name, streams in ingesters.items():
            await self._send(
                ing_name, Arm(**base, workers=addresses, streams=streams, record_dir=record_dir)
            )
        for worker in workers:
            await self._send(worker.name, Arm(**base, reducer=reducers[0].address))
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
        if scan.state != "arming":
            raise ArmError(f"scan {scan.scan_id} was stopped while arming")
        if scan.arm_errors:
            scan.state = "failed"
            await self._broadcast(scan, Finish(scan=scan.number, reason="aborted"))
            errors = "; ".join(f"{k}: {v}" for k, v in sorted(scan.arm_errors.items()))
            raise ArmError(f"arming failed: {errors}")
        scan.state = "running"
        scan.started = time.monotonic()
        log.info("armed scan %s: %s", scan.scan_id, tmap.describe())
        await self._pump(scan)
        self._changed()
        return scan.scan_id

    # -- assignment ----------------------------------------------------------------------

    async def _pump(self, scan: ScanState) -> None:
        assigner = scan.assigner
        if assigner is None or scan.state != "running":
            return
        to_ingesters: dict[str, list[tuple[int, dict[str, list[str]]]]] = {}
        to_workers: dict[str, list[tuple[int, list[str], bool]]] = {}
        stream_owner = {s: ing for ing, ss in scan.ingesters.items() for s in ss}
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
            if per_worker:
                scan.pending[a.event_number] = len(per_worker)
            else:
                scan.completed += 1  # only discards or gaps: nothing to process
        # Built by us and well-typed: skip validating thousands of entries per batch.
        for ing, routes_batch in to_ingesters.items():
            await self._send(ing, Assign.model_construct(scan=scan.number, events=routes_batch))
        for w, expect_batch in to_workers.items():
            await self._send(w, Expect.model_construct(scan=scan.number, events=expect_batch))
        await self._check_complete(scan)

    async def _on_done(self, scan: ScanState, worker: str, msg: Done) -> None:
        assert scan.assigner is not None
        for event, has_result in msg.events:
            left = scan.pending.get(event)
            if left is None:
                continue
            if left <= 1:
                del scan.pending[event]
                scan.completed += 1
            else:
                scan.pending[event] = left - 1
            if has_result:
                scan.results_expected += 1
        comp = self.components.get(worker)
        if comp is not None:
            comp.counters["errors"] = msg.errors
            if msg.last_error:
                comp.counters["last_error"] = msg.last_error
                scan.last_error = f"{worker}: {msg.last_error}"
        if scan.state == "running":
            scan.assigner.ready(worker, len(msg.events))
            scan.rate.update(scan.completed)
            await self._pump(scan)

    async def _check_complete(self, scan: ScanState) -> None:
        if scan.state != "running" or scan.assigner is None or not scan.assigner.done:
            return
        if scan.pending:
            return
        for ing, last in scan.last_event_of.items():
            if scan.ingested.get(ing, -1) < last:
                return
        scan.state = "finishing"
        scan.end_reason = "complete"
        await self._finish(scan, "complete")

    async def _finish(self, scan: ScanState, reason: str) -> None:
        for name in [*scan.ingesters, *scan.workers]:
            await self._send(name, Finish(scan=scan.number, reason=reason))
        await self._send(
            scan.reducer,
            Finish(
                scan=scan.number,
                reason=reason,
                expected_results=scan.results_expected,
                ledger=scan.ledgers,
            ),
        )

    async def _broadcast(self, scan: ScanState, msg: Message) -> None:
        for name in self._participants(scan):
            await self._send(name, msg)

    def _end(self, scan: ScanState) -> None:
        if scan.done_event.is_set():
            return  # a late confirmation of a scan that was ended without it
        self._count_not_received(scan)
        if scan.state == "finishing" and scan.end_reason == "complete":
            scan.state = "finished"
        elif scan.state == "finishing":
            scan.state = scan.end_reason or "stopped"
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
        running = scan is not None and scan.state == "running" and scan.assigner is not None
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

    @staticmethod
    def _count_not_received(scan: ScanState) -> None:
        """Frames the map expected that never came (a stopped scan): counted, not silent."""
        for stream, expected in scan.tmap.frames_per_stream().items():
            counts = scan.ledgers.setdefault(stream, {})
            seen = sum(int(counts.get(k, 0) or 0) for k in ("delivered", "discarded", "missing"))
            counts["expected"] = expected
            counts["not_received"] = max(expected - seen, 0)

    async def stop(self, reason: str = "stopped", grace: float | None = None) -> None:
        """End the current scan now; the reducer still runs ``finish`` with what it has.

        With ``grace``, wait that long for the reducer's confirmation, then end the scan
        anyway (a hung or killed reducer must not keep a scan open).
        """
        scan = self.scan
        if scan is None or scan.state not in ("arming", "running", "finishing"):
            return
        scan.state = "finishing"
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
