"""Ingester service: reads upstream streams, cuts them into events, sends each event's frames to
the workers the scheduler assigned, zero-copy.

Upstreams are connected only while a scan is armed, and read only as far as the assignments
ask: frames the map discards are read and dropped, streams without a frame in an event are not
read at all. Everything before a stream's start message or after its end is dropped by the
framer and counted. When the workers fall behind, sends wait (ZeroMQ high-water marks), the
ingester stops reading, and the upstream's own buffers push back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from tango_dranspose.core.capture import DumpWriter
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.ledger import StreamLedger
from tango_dranspose.runtime import transport
from tango_dranspose.runtime.messages import (
    Arm,
    Armed,
    Assign,
    Finish,
    Finished,
    Hello,
    Ingested,
    Message,
    Resend,
)
from tango_dranspose.runtime.service import Service
from tango_dranspose.runtime.transport import LOST_TYP, MISSING_TYP
from tango_dranspose.sources.upstream import Upstream, UpstreamClosed, open_upstream
from tango_dranspose.streams import get_protocol
from tango_dranspose.streams.base import Framer, safe_feed, safe_flush

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+):(?P<protocol>[A-Za-z0-9_]+)=(?P<url>\S+)$")


@dataclass(frozen=True)
class StreamConfig:
    """One stream of an ingester: ``name:PROTOCOL=upstream-url``."""

    name: str
    protocol: str
    upstream: str

    @classmethod
    def parse(cls, text: str) -> StreamConfig:
        match = _SPEC.match(text.strip())
        if not match:
            raise ValueError(
                f"stream {text!r}: write it as NAME:PROTOCOL=URL, e.g. orca:STINS=pull+tcp://host:9999"
            )
        try:
            get_protocol(match["protocol"])  # fail early on an unknown protocol
        except KeyError as exc:
            raise ValueError(f"stream {text!r}: {exc.args[0]}") from None
        return cls(match["name"], match["protocol"], match["url"])


@dataclass
class _Stream:
    config: StreamConfig
    framer: Framer | None = None
    upstream: Upstream | None = None
    buffer: deque[StreamData] = field(default_factory=deque)
    ended: str | None = None
    delivered: int = 0
    discarded: int = 0
    empty: int = 0  # assigned frames the upstream ended without
    redispatched: int = 0
    lost: int = 0  # frames to send again that were no longer kept
    bytes: int = 0
    read: int = 0  # frames of the scan read (delivered or discarded)
    interrupted_at: int | None = None
    new_series_seen: int = 0  # drops of start messages inside the scan, at the last look
    was_connected: bool = False
    opened_at: float = 0.0

    def ledger(self) -> StreamLedger:
        drops = self.framer.drops if self.framer else None
        led = StreamLedger(
            delivered=self.delivered,
            discarded=self.discarded,
            redispatched=self.redispatched,
            bytes=self.bytes,
            dropped=dict(drops.counts) if drops else {},
            drop_samples=dict(drops.samples) if drops else {},
            upstream_error=self.ended,
            interrupted_at=self.interrupted_at,
        )
        led.lose(self.lost, LOST_REASON)
        led.end_upstream(self.empty)
        return led

    @property
    def connected(self) -> bool:
        return self.upstream is not None and bool(self.upstream.stats.connected)


LOST_REASON = "frames no longer kept for re-dispatch"
NEW_SERIES = "start message inside a running scan"  # the framer's drop reason
RETAIN_BYTES = 512 << 20  # frames kept for re-dispatch at most (oldest settled first)
BATCH_EVENTS = 64  # events of one worker sent in one message at most
BATCH_BYTES = 1 << 20  # ... or this many bytes of frames
REPORT_DELAY = 0.01  # progress reports wait this long to cover several events
OUTAGE_GRACE = 2.0  # seconds an armed upstream may take to connect before it counts as out
SEND_POLL_MS = 200  # a send blocked by a full worker looks again this often whether it died


@dataclass
class _Outbox:
    table: transport.EventTable = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    nbytes: int = 0


@dataclass
class _Scan:
    number: int
    scan_id: str
    streams: list[str]
    queue: asyncio.Queue[list[tuple[int, dict[str, list[str]]]]] = field(
        default_factory=asyncio.Queue
    )
    upto: int = -1
    task: asyncio.Task[None] | None = None
    recorder: DumpWriter | None = None
    outbox: dict[str, _Outbox] = field(default_factory=dict)
    report_pending: bool = False
    # Frames of events not settled yet, by event, kept to send again if their worker dies.
    held: OrderedDict[int, tuple[dict[str, StreamData], int]] = field(default_factory=OrderedDict)
    held_bytes: int = 0
    reroute: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # not read yet
    dead: set[str] = field(default_factory=set)


class IngesterService(Service):
    kind = "ingester"

    def __init__(
        self,
        name: str,
        scheduler: str,
        streams: list[StreamConfig],
        *,
        record_dir: str | None = None,
        retain_bytes: int = RETAIN_BYTES,
    ) -> None:
        super().__init__(name, scheduler)
        self.record_dir = record_dir  # record every scan here unless the scan names a place
        self.retain_bytes = retain_bytes
        if not streams:
            raise ValueError("an ingester needs at least one stream")
        self.streams = {s.name: _Stream(s) for s in streams}
        self.push: dict[str, tuple[str, transport.FastSocket]] = {}
        self.scan: _Scan | None = None
        self.frames_total = 0
        self.bytes_total = 0
        self.dropped_total = 0

    def hello(self) -> Hello:
        return Hello(kind="ingester", name=self.name, streams=list(self.streams), pid=os.getpid())

    @property
    def scan_active(self) -> bool:
        return self.scan is not None

    def counters(self) -> dict[str, Any]:
        return {
            "frames": self.frames_total,
            "bytes": self.bytes_total,
            "dropped": self.dropped_total
            + sum(s.framer.drops.total for s in self.streams.values() if s.framer is not None),
            "connected": {n: s.connected for n, s in self.streams.items()},
            "upstream_errors": {
                n: s.upstream.stats.last_error
                for n, s in self.streams.items()
                if s.upstream is not None and s.upstream.stats.last_error
            },
            "scan": self.scan.number if self.scan else None,
            "upto": self.scan.upto if self.scan else None,
            "held": len(self.scan.held) if self.scan else 0,
            "outages": self.outages(),
            "ledger": {n: s.ledger().as_dict() for n, s in self.streams.items()},
        }

    def outages(self) -> dict[str, str]:
        """Streams of the armed scan whose upstream went away, or never came within a grace
        period: a detector that died or restarted is visible while it is gone."""
        scan = self.scan
        if scan is None:
            return {}
        now = time.monotonic()
        found = {}
        for name in scan.streams:
            st = self.streams[name]
            if st.upstream is None or st.ended is not None:
                continue
            if st.connected:
                st.was_connected = True
                continue
            if st.was_connected or now - st.opened_at > OUTAGE_GRACE:
                found[name] = st.upstream.stats.last_error or "upstream not connected"
        return found

    async def teardown(self) -> None:
        await self._end_scan()
        for _, fast in self.push.values():
            fast.sock.close(0)

    # -- control -------------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        if isinstance(msg, Arm):
            await self._arm(msg)
        elif isinstance(msg, Assign):
            if self.scan is not None and msg.scan == self.scan.number:
                if msg.events:
                    self.scan.queue.put_nowait(msg.events)
                self._release(self.scan, msg.release)
        elif isinstance(msg, Resend):
            if self.scan is not None and msg.scan == self.scan.number:
                await self._resend(self.scan, msg)
        elif isinstance(msg, Finish) and self.scan is not None and msg.scan == self.scan.number:
            scan = self.scan
            summary = {"ledger": {n: self.streams[n].ledger().as_dict() for n in scan.streams}}
            await self._end_scan()
            await self.send(Finished(scan=msg.scan, kind="ingester", summary=summary))

    async def _arm(self, msg: Arm) -> None:
        await self._end_scan()
        unknown = [s for s in msg.streams if s not in self.streams]
        if unknown:
            await self.send(
                Armed(scan=msg.scan, ok=False, error=f"{self.name} has no stream(s) {unknown}")
            )
            return
        for name, address in msg.workers.items():
            self._connect(name, address)
        error = None
        for name in msg.streams:
            st = self.streams[name]
            self.dropped_total += st.framer.drops.total if st.framer else 0
            st.framer = get_protocol(st.config.protocol).framer()
            st.framer.on_new_drop = self._log_drop(name)
            st.buffer.clear()
            st.ended = None
            st.interrupted_at = None
            st.delivered = st.discarded = st.empty = st.bytes = st.read = 0
            st.redispatched = st.lost = st.new_series_seen = 0
            st.was_connected = False
            st.opened_at = time.monotonic()
            try:
                st.upstream = open_upstream(st.config.upstream)
                await st.upstream.open()
            except Exception as exc:
                error = f"stream {name}: cannot open upstream {st.config.upstream}: {exc}"
                break
        scan = _Scan(msg.scan, msg.scan_id, list(msg.streams))
        record_dir = msg.record_dir or self.record_dir
        if error is None and record_dir:
            try:
                # Device names carry slashes; a file name must not.
                safe = re.sub(r"[^A-Za-z0-9_.\-]", "-", self.name)
                path = Path(record_dir) / f"dump_{safe}_{msg.scan_id}.cbors"
                path.parent.mkdir(parents=True, exist_ok=True)
                scan.recorder = DumpWriter(path)
            except OSError as exc:
                error = f"cannot record to {record_dir}: {exc}"
        self.scan = scan
        if error is not None:
            await self._end_scan()
            await self.send(Armed(scan=msg.scan, ok=False, error=error))
            return
        scan.task = self.spawn(self._scan_loop(scan), f"scan{msg.scan}")
        await self.send(Armed(scan=msg.scan))

    def _connect(self, name: str, address: str, fresh: bool = False) -> None:
        """A PUSH socket to worker ``name``; ``fresh``: never reuse one (a worker that came
        back must not get what was queued for its previous self)."""
        known = self.push.get(name)
        if known is not None and known[0] == address and not fresh:
            return
        if known is not None:
            known[1].sock.close(0)
        sock = transport.socket(zmq.PUSH)
        sock.connect(address)
        self.push[name] = (address, transport.FastSocket(sock))

    def _release(self, scan: _Scan, below: int) -> None:
        held = scan.held
        while held:
            event = next(iter(held))
            if event >= below:
                break
            scan.held_bytes -= held.pop(event)[1]

    def _hold(self, scan: _Scan, event: int, frames: dict[str, StreamData], size: int) -> None:
        if self.retain_bytes <= 0:
            return  # nothing kept: a dead worker's events are lost, counted
        scan.held[event] = (frames, size)
        scan.held_bytes += size
        while scan.held_bytes > self.retain_bytes and len(scan.held) > 1:
            # Oldest first: a worker that dies now loses these, counted, instead of this
            # process growing without bound while a placement group stays open.
            scan.held_bytes -= scan.held.popitem(last=False)[1][1]

    async def _resend(self, scan: _Scan, msg: Resend) -> None:
        """Workers died: send their events' frames again, now or when they are read."""
        for name in msg.dead:
            scan.dead.add(name)
            scan.outbox.pop(name, None)
        for name, address in msg.workers.items():
            scan.dead.discard(name)
            self._connect(name, address, fresh=name not in msg.dead and name in self.push)
        for event, routes in msg.events:
            if event > scan.upto:
                later = scan.reroute.setdefault(event, {})
                for stream, workers in routes.items():
                    later.setdefault(stream, []).extend(workers)
                continue
            kept = scan.held.get(event, ({}, 0))[0]
            for stream, workers in routes.items():
                st = self.streams[stream]
                data = kept.get(stream)
                for worker in workers:
                    if data is None:
                        st.lost += 1
                        self._queue(scan, worker, event, [(stream, LOST_TYP, None, 0)])
                    else:
                        st.redispatched += 1
                        self._queue(scan, worker, event, [(stream, data.typ, data, 0)])
        await self._flush(scan)
        self._report_soon(scan)

    def _queue(
        self,
        scan: _Scan,
        worker: str,
        event: int,
        items: list[tuple[str, str, StreamData | None, int]],
    ) -> _Outbox:
        box = scan.outbox.get(worker)
        if box is None:
            box = scan.outbox[worker] = _Outbox()
        box.table.append((event, [(s, typ, d.length if d else 0) for s, typ, d, _ in items]))
        for _, _, d, size in items:
            if d is not None:
                box.frames.extend(d.frames)
                box.nbytes += size
        return box

    def _log_drop(self, stream: str) -> Any:
        def log(reason: str, sample: str) -> None:
            self.log.warning(
                "stream %s: dropped a message (%s); first sample: %s", stream, reason, sample
            )

        return log

    async def _end_scan(self) -> None:
        scan, self.scan = self.scan, None
        if scan is None:
            return
        if scan.task is not None and not scan.task.done():
            scan.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scan.task
        for name in scan.streams:
            st = self.streams[name]
            if st.upstream is not None:
                try:
                    await st.upstream.close()
                except Exception as exc:
                    self.log.warning("closing upstream of %s: %s", name, exc)
                st.upstream = None
        if scan.recorder is not None:
            scan.recorder.close()

    # -- data ----------------------------------------------------------------------------

    async def _next(self, st: _Stream, scan: _Scan) -> StreamData | None:
        while not st.buffer:
            if st.ended is not None or st.upstream is None:
                return None
            try:
                nowait = getattr(st.upstream, "receive_nowait", None)
                message = nowait() if nowait is not None else None
                if message is None:
                    await self._flush(scan)  # about to wait: send what is ready first
                    message = await st.upstream.receive()
            except asyncio.CancelledError:
                raise
            except UpstreamClosed as exc:
                # A playback that ran out, or a peer that hung up: events held back are final.
                st.ended = f"upstream closed: {exc}"
                self.log.info("stream %s: %s", st.config.name, st.ended)
                assert st.framer is not None
                st.buffer.extend(framed.data for framed in safe_flush(st.framer))
                continue
            except Exception as exc:
                st.ended = f"{type(exc).__name__}: {exc}"
                self.log.error("stream %s: upstream failed: %s", st.config.name, st.ended)
                return None
            assert st.framer is not None
            for framed in safe_feed(st.framer, message):
                st.buffer.append(framed.data)
            if st.framer.drops.counts.get(NEW_SERIES, 0) > st.new_series_seen:
                self._new_series(st)
        return st.buffer.popleft()

    def _new_series(self, st: _Stream) -> None:
        """The upstream started again inside the scan: never merge the new series. The
        stream ends where the old one stopped; the scheduler decides what the scan does."""
        assert st.framer is not None
        st.new_series_seen = st.framer.drops.counts.get(NEW_SERIES, 0)
        if st.interrupted_at is not None:
            return
        st.interrupted_at = st.read + len(st.buffer)
        st.ended = f"the upstream started a new series after frame {st.interrupted_at}"
        self.log.warning("stream %s: %s", st.config.name, st.ended)

    async def _flush(self, scan: _Scan, only: str | None = None) -> None:
        for worker in [only] if only is not None else list(scan.outbox):
            box = scan.outbox.pop(worker, None)
            if box is not None and worker not in scan.dead:
                head = transport.pack_data_header(scan.number, box.table)
                await self._send_to(scan, worker, [head, *box.frames])

    async def _send_to(self, scan: _Scan, worker: str, parts: list[Any]) -> None:
        """Send, waiting while the worker is slow (back-pressure) but never for a dead one:
        the scheduler may declare it dead while we wait."""
        while worker not in scan.dead:
            found = self.push.get(worker)
            if found is None:
                return
            fast = found[1]
            try:
                fast.sync.send_multipart(parts, zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                await fast.sock.poll(SEND_POLL_MS, zmq.POLLOUT)  # type: ignore[call-arg]
            except zmq.ZMQError:
                return  # its socket was replaced or closed: the scheduler moved its events

    def _report_soon(self, scan: _Scan) -> None:
        """Report progress a little later, once for everything handled meanwhile."""
        if scan.report_pending:
            return
        scan.report_pending = True

        def fire() -> None:
            scan.report_pending = False
            if self.scan is scan:
                self.spawn(self._report(scan), "report")

        asyncio.get_running_loop().call_later(REPORT_DELAY, fire)

    async def _report(self, scan: _Scan) -> None:
        ledger = {n: self.streams[n].ledger().as_dict() for n in scan.streams}
        await self.send(Ingested.model_construct(scan=scan.number, upto=scan.upto, ledger=ledger))
        self.changed()

    async def _scan_loop(self, scan: _Scan) -> None:
        while True:
            if scan.queue.empty():
                await self._flush(scan)
                self._report_soon(scan)
            batch = await scan.queue.get()
            for event, routes in batch:
                recorded: dict[str, StreamData] = {}
                sizes: dict[str, int] = {}
                absent: list[str] = []
                for stream in routes:
                    st = self.streams[stream]
                    data = await self._next(st, scan)
                    if data is None:
                        st.empty += 1
                        absent.append(stream)
                        continue
                    recorded[stream] = data
                    size = sizes[stream] = data.nbytes()
                    st.bytes += size
                    st.read += 1
                    self.bytes_total += size
                    self.frames_total += 1
                # Routes are read only now, after every wait: a worker may have died meanwhile.
                moved = scan.reroute.pop(event, None) if scan.reroute else None
                dead = scan.dead
                per_worker: dict[str, list[tuple[str, str, StreamData | None, int]]] = {}
                kept: dict[str, StreamData] = {}
                kept_bytes = 0
                for stream, data in recorded.items():
                    st = self.streams[stream]
                    workers = routes[stream]
                    if not workers:
                        st.discarded += 1
                        continue
                    st.delivered += 1
                    if dead:
                        workers = [w for w in workers if w not in dead]
                    if moved and stream in moved:
                        workers = [*workers, *(w for w in moved[stream] if w not in workers)]
                    size = sizes[stream]
                    kept[stream] = data
                    kept_bytes += size
                    for worker in workers:
                        per_worker.setdefault(worker, []).append((stream, data.typ, data, size))
                for stream in absent:
                    # Its workers expect it: tell them it will not come, or they wait for ever.
                    workers = [w for w in routes[stream] if w not in dead]
                    if moved and stream in moved:
                        workers = [*workers, *(w for w in moved[stream] if w not in workers)]
                    for worker in workers:
                        per_worker.setdefault(worker, []).append((stream, MISSING_TYP, None, 0))
                if kept:
                    self._hold(scan, event, kept, kept_bytes)
                full = []
                for worker, items in per_worker.items():
                    box = self._queue(scan, worker, event, items)
                    if len(box.table) >= BATCH_EVENTS or box.nbytes >= BATCH_BYTES:
                        full.append(worker)
                if scan.recorder is not None and recorded:
                    scan.recorder.write(event, recorded)
                # Before any wait: a resend for this event from now on finds its frames kept.
                scan.upto = event
                for worker in full:
                    await self._flush(scan, worker)
            if scan.queue.empty():
                await self._flush(scan)
                self._report_soon(scan)
