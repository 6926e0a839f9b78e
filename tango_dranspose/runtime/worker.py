"""Worker service: assembles events from the ingesters and runs the user's ``process_event``.

The event loop receives data and control; one processing thread per worker runs the payload
(off the loop, one event at a time, in the order the scheduler gave), encodes the result and
sends it to the reducer on its own socket. Acknowledgements go back to the scheduler in batches.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from tango_dranspose.core.events import EventData, StreamData
from tango_dranspose.core.parameters import ParameterSet
from tango_dranspose.core.payload import PayloadError, WorkerPayload
from tango_dranspose.core.resultcodec import encode as encode_result
from tango_dranspose.runtime import transport
from tango_dranspose.runtime.debugview import DebugBuffer
from tango_dranspose.runtime.messages import (
    Arm,
    Armed,
    Done,
    Expect,
    Finish,
    Finished,
    Hello,
    Message,
    ParametersApplied,
    SetParameters,
    decode_parameters,
)
from tango_dranspose.runtime.service import PayloadService
from tango_dranspose.runtime.stats import Percentiles


@dataclass
class _Scan:
    number: int
    params: dict[str, Any]
    parameters_hash: str
    reducer: str | None
    payload: WorkerPayload | None = None
    expect: deque[tuple[int, frozenset[str], bool]] = field(default_factory=deque)
    partial: dict[int, dict[str, StreamData]] = field(default_factory=dict)
    stopped: bool = False
    ended: bool = False  # the scheduler said Finish
    version: int = 0
    announced: bool = False  # the scheduler knows which version this worker started with
    # Parameter versions still to come, (from_event, version, hash, params); thread-owned.
    switches: deque[tuple[int, int, str, dict[str, Any]]] = field(default_factory=deque)
    # Events sent again after a worker died -> the worker whose results they stand for.
    origins: dict[int, str] = field(default_factory=dict)
    seq: int = 0  # results messages sent in this scan (the reducer confirms them by number)


DONE_DELAY = 0.01  # seconds an acknowledgement may wait for company
DONE_BATCH = 16  # ... unless this many events are done already
RESULT_HWM = 8  # result messages (batches of up to 1 MiB) queued towards the reducer
SEND_POLL_MS = 200  # a send blocked by a slow reducer looks again this often if it should stop


@dataclass
class _Outbox:
    table: transport.ResultTable = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    nbytes: int = 0
    acks: list[int] = field(default_factory=list)  # events acknowledged once this is sent


class WorkerService(PayloadService):
    kind = "worker"

    def __init__(
        self,
        name: str,
        scheduler: str,
        worker_class: str,
        *,
        tags: list[str] | None = None,
        bind: str = "tcp://127.0.0.1:0",
        search: list[str] | None = None,
        keep_last: int = 0,
    ) -> None:
        super().__init__(name, scheduler, worker_class, bind=bind, search=search)
        self.tags = tags or ["generic"]
        # A debug view: the last events received, parsed, for people to look at.
        self.debug = DebugBuffer(keep_last) if keep_last > 0 else None
        self.scan: _Scan | None = None
        self.processed = 0
        self.errors = 0
        self.last_error: str | None = None
        self.stale = 0
        self.times = Percentiles()
        self._busy_total = 0.0
        self._started = time.monotonic()
        # (scan, event, produced a result, the results message that carried it)
        self._done: list[tuple[int, int, bool, int]] = []
        self._lost: dict[int, list[int]] = {}  # scan -> [events lost, results lost] not told
        self.lost_events = 0
        self.lost_results = 0
        self._done_lock = threading.Lock()
        self._flush_pending = False
        self._outbox = _Outbox()  # results held while more events wait (payload thread only)

    def hello(self) -> Hello:
        return Hello(kind="worker", tags=self.tags, **self.hello_fields())

    @property
    def scan_active(self) -> bool:
        return self.scan is not None and not self.scan.ended

    def counters(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        return {
            "processed": self.processed,
            "errors": self.errors,
            "last_error": self.last_error,
            "stale": self.stale,
            "mean_ms": self.times.mean() * 1e3,
            "p99_ms": self.times.quantile(0.99) * 1e3,
            "load": self._busy_total / elapsed if elapsed > 0 else 0.0,
            "scan": self.scan.number if self.scan else None,
            "pending": len(self.scan.expect) if self.scan else 0,
            "lost_events": self.lost_events,
            "lost_results": self.lost_results,
        }

    # -- control -------------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        if isinstance(msg, Arm):
            await self._arm(msg)
        elif isinstance(msg, Expect):
            scan = self.scan
            if scan is None or msg.scan != scan.number or scan.stopped:
                return
            for event, streams, tick in msg.events:
                scan.expect.append((event, frozenset(streams), tick))
            scan.origins.update(msg.origins)
            self._dispatch(scan)
        elif isinstance(msg, SetParameters):
            scan = self.scan
            if scan is not None and msg.scan == scan.number and not scan.ended:
                self._work.put(("params", scan, msg))
        elif isinstance(msg, Finish):
            scan = self.scan
            if scan is None or msg.scan != scan.number:
                return
            scan.ended = True
            if msg.reason != "complete":
                scan.stopped = True
                scan.expect.clear()
                scan.partial.clear()
            self._work.put(("finish", scan))

    async def _arm(self, msg: Arm) -> None:
        raw = decode_parameters(msg.parameters)
        self.learn_descriptions(msg.descriptions)
        try:
            params = ParameterSet(self.all_descriptions, raw).as_dict()
        except ValueError as exc:
            await self.send(Armed(scan=msg.scan, ok=False, error=str(exc)))
            return
        if self.scan is not None:
            # Whatever the scheduler armed before is over: a thread waiting to hand results
            # to that scan's reducer must give up, or this arm would wait behind it.
            self.scan.stopped = True
        scan = _Scan(msg.scan, params, msg.parameters_hash, msg.reducer)
        scan.version = msg.parameters_version
        done: asyncio.Future[tuple[bool, str | None, float | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._work.put(("arm", scan, done))
        ok, error, tick = await done
        if ok:
            old = self.scan
            if old is not None:
                old.stopped = True
            self.scan = scan
        await self.send(Armed(scan=msg.scan, ok=ok, error=error, tick_interval=tick))

    # -- data ----------------------------------------------------------------------------

    async def _data_loop(self) -> None:
        data = transport.FastSocket(self.data)
        while True:
            for frames in await data.recv_batch():
                try:
                    scan_no, table = transport.unpack_data_header(frames[0].buffer)
                    if sum(n for _, streams in table for _, _, n in streams) != len(frames) - 1:
                        raise ValueError("frame count does not match the header")
                except (ValueError, IndexError, TypeError) as exc:
                    self.stale += 1
                    self.log.warning("dropping malformed data message: %s", exc)
                    continue
                scan = self.scan
                if scan is None or scan_no != scan.number or scan.stopped:
                    self.stale += len(table)
                    continue
                pos = 1
                for event, streams in table:
                    parts = scan.partial.setdefault(event, {})
                    for name, typ, count in streams:
                        parts[name] = StreamData(typ=typ, frames=frames[pos : pos + count])
                        pos += count
            if self.scan is not None:
                self._dispatch(self.scan)

    def _dispatch(self, scan: _Scan) -> None:
        """Hand every complete event at the head of the order to the processing thread."""
        while scan.expect:
            event, streams, tick = scan.expect[0]
            parts = scan.partial.get(event)
            if parts is None or not streams <= parts.keys():
                return
            scan.expect.popleft()
            del scan.partial[event]
            if any(p.typ == transport.LOST_TYP for p in parts.values()):
                self._work.put(("lost", scan, event))
                continue
            if any(p.typ == transport.MISSING_TYP for p in parts.values()):
                parts = {s: p for s, p in parts.items() if p.typ != transport.MISSING_TYP}
                if not parts:
                    self._work.put(("missing", scan, event))
                    continue
            self._work.put(("event", scan, EventData(event, parts), tick))

    # -- processing thread -----------------------------------------------------------------

    def _thread_main(self) -> None:
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        # Few messages in flight: a slow reducer holds the workers back (and they the
        # ingesters) instead of results piling up in socket queues.
        sock.setsockopt(zmq.SNDHWM, RESULT_HWM)
        connected: str | None = None
        while True:
            item = self._work.get()
            if item is None:
                self.close_payload(self.scan.payload if self.scan else None)
                break
            what, scan = item[0], item[1]
            if what == "arm":
                result = self._construct(scan)
                if scan.reducer and scan.reducer != connected:
                    if connected:
                        sock.disconnect(connected)
                    sock.connect(scan.reducer)
                    connected = scan.reducer
                self.call_soon(item[2].set_result, result)
            elif what == "params":
                self._queue_switch(scan, item[2])
            elif what == "missing":
                self._ack(scan, item[2], False)
            elif what == "lost":
                self.log.warning(
                    "event %d: its frames were no longer kept when it was sent again", item[2]
                )
                self._ack(scan, item[2], False, lost=True)
            elif what == "event":
                if scan.stopped:
                    continue
                event_number = item[2].event_number
                if scan.switches and scan.switches[0][0] <= event_number:
                    self._switch(sock, scan, event_number)
                elif not scan.announced:
                    scan.announced = True
                    applied = ParametersApplied(
                        scan=scan.number, version=scan.version, event=event_number
                    )
                    self.call_soon(self.send_nowait, applied)
                self._process(scan, item[2], item[3])
                if self.debug is not None:
                    self._keep(item[2])
                box = self._outbox
                if self._work.empty() or len(box.table) >= 64 or box.nbytes >= 1 << 20:
                    self._send_results(sock, scan)
            elif what == "finish":
                self._send_results(sock, scan)
                self._finish(scan)
        sock.close()

    def _keep(self, event: EventData) -> None:
        assert self.debug is not None
        try:
            self.debug.keep(event)
        except Exception:
            self.internal_errors += 1
            self.log.exception("keeping event %d for the debug view failed", event.event_number)

    def _queue_switch(self, scan: _Scan, msg: SetParameters) -> None:
        try:
            params = ParameterSet(
                self.all_descriptions, decode_parameters(msg.parameters)
            ).as_dict()
        except ValueError as exc:
            self.errors += 1
            self.last_error = f"parameters version {msg.version}: {exc}"
            self.log.error("cannot use %s", self.last_error)
            return
        scan.switches.append((msg.from_event, msg.version, msg.hash, params))

    def _switch(self, sock: zmq.Socket[Any], scan: _Scan, event: int) -> None:
        """Use the newest version that applies from ``event`` on; results so far go out
        first, so that every results message carries one version."""
        self._send_results(sock, scan)
        while scan.switches and scan.switches[0][0] <= event:
            _, scan.version, scan.parameters_hash, scan.params = scan.switches.popleft()
        scan.announced = True
        applied = ParametersApplied(scan=scan.number, version=scan.version, event=event)
        self.call_soon(self.send_nowait, applied)

    def _construct(self, scan: _Scan) -> tuple[bool, str | None, float | None]:
        try:
            scan.payload = WorkerPayload(
                self.cls, parameters=scan.params, context=self.context, state=None
            )
            return True, None, scan.payload.tick_interval(scan.params)
        except (PayloadError, Exception) as exc:
            return False, f"{self.payload_spec}: {exc}", None

    def _send_results(self, sock: zmq.Socket[Any], scan: _Scan) -> None:
        box = self._outbox
        if not box.table:
            return
        self._outbox = _Outbox()
        seq = scan.seq
        head = transport.pack_result_header(
            scan.number, self.name, scan.parameters_hash, box.table, seq
        )
        parts = [head, *box.frames]
        while True:
            try:
                transport.send_parts(sock, parts, zmq.NOBLOCK)
                scan.seq += 1
                # Acknowledged only now that the results are on their way, with the number
                # the reducer will confirm: a result that dies here is computed again.
                for event in box.acks:
                    self._ack(scan, event, True, seq=seq)
                return
            except zmq.Again:
                if scan.stopped:
                    break
                # The reducer is slow (wait: that is back-pressure) or gone (the scheduler
                # will end the scan, which sets ``stopped``): never wait for ever.
                sock.poll(SEND_POLL_MS, zmq.POLLOUT)
        n = len(box.table)
        self.lost_results += n
        with self._done_lock:
            self._lost.setdefault(scan.number, [0, 0])[1] += n
        self.log.error(
            "scan %d ended while %d result(s) waited for the reducer: counted lost", scan.number, n
        )
        self.call_soon(self._flush_done)

    def _process(self, scan: _Scan, event: EventData, tick: bool) -> None:
        assert scan.payload is not None
        start = time.perf_counter()
        has_result = False
        try:
            result = scan.payload.process_event(event, scan.params, tick)
            if result is not None:
                # Copied now: the codec is zero-copy, and a payload may overwrite its array
                # in place for the next event while this result still waits to be sent.
                parts = [
                    bytes(p) if isinstance(p, memoryview) else p for p in encode_result(result)
                ]
                box = self._outbox
                origin = scan.origins.get(event.event_number)
                if origin is None:
                    box.table.append((event.event_number, len(parts)))
                else:
                    box.table.append((event.event_number, len(parts), origin))
                box.acks.append(event.event_number)
                box.frames.extend(parts)
                box.nbytes += sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
                has_result = True
        except Exception as exc:
            self.errors += 1
            self.last_error = f"event {event.event_number}: {type(exc).__name__}: {exc}"
            if self.errors <= 10 or self.errors % 1000 == 0:
                self.log.error(
                    "process_event failed on %s\n%s", self.last_error, traceback.format_exc()
                )
        took = time.perf_counter() - start
        self._busy_total += took
        self.times.add(took)
        self.processed += 1
        if not has_result:
            self._ack(scan, event.event_number, False)

    def _ack(
        self, scan: _Scan, event: int, has_result: bool, lost: bool = False, seq: int = -1
    ) -> None:
        with self._done_lock:
            self._done.append((scan.number, event, has_result, seq))
            if lost:
                self.lost_events += 1
                self._lost.setdefault(scan.number, [0, 0])[0] += 1
            schedule = not self._flush_pending
            self._flush_pending = True
            now = len(self._done) >= DONE_BATCH
        if now:
            self.call_soon(self._flush_done)
        elif schedule:
            # Acknowledge a little later, with whatever else finishes meanwhile: one message
            # (and one scheduler round) per event would compete with the data for the CPUs.
            assert self._loop is not None
            self.call_soon(self._loop.call_later, DONE_DELAY, self._flush_done)

    def _finish(self, scan: _Scan) -> None:
        error = None
        if scan.payload is not None:
            try:
                scan.payload.finish(scan.params)
            except Exception as exc:
                self.errors += 1
                error = f"finish: {type(exc).__name__}: {exc}"
                self.log.exception("finish failed")
        self.call_soon(self._flush_done)
        summary = {"processed": self.processed, "errors": self.errors, "finish_error": error}
        self.call_soon(self.send_nowait, Finished(scan=scan.number, kind="worker", summary=summary))

    def _flush_done(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
            lost, self._lost = self._lost, {}
            self._flush_pending = False
        # A flush timed during one scan may fire after the next began: group by scan.
        per_scan: dict[int, list[tuple[int, bool, int]]] = {n: [] for n in lost}
        for scan_no, event, has_result, seq in done:
            per_scan.setdefault(scan_no, []).append((event, has_result, seq))
        for scan_no, events in per_scan.items():
            lost_events, lost_results = lost.get(scan_no, (0, 0))
            self.send_nowait(
                Done.model_construct(
                    scan=scan_no,
                    events=events,
                    errors=self.errors,
                    last_error=self.last_error,
                    lost=lost_events,
                    results_lost=lost_results,
                )
            )
        if done:
            self.changed()
