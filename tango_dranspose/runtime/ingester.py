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
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from tango_dranspose.core.capture import DumpWriter
from tango_dranspose.core.events import StreamData
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
)
from tango_dranspose.runtime.service import Service
from tango_dranspose.sources.upstream import Upstream, UpstreamClosed, open_upstream
from tango_dranspose.streams import get_protocol
from tango_dranspose.streams.base import Framer

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
    missing: int = 0
    bytes: int = 0

    def ledger(self) -> dict[str, Any]:
        drops = self.framer.drops if self.framer else None
        return {
            "delivered": self.delivered,
            "discarded": self.discarded,
            "missing": self.missing,
            "bytes": self.bytes,
            "dropped": dict(drops.counts) if drops else {},
            "drop_samples": dict(drops.samples) if drops else {},
            "upstream_error": self.ended,
        }


BATCH_EVENTS = 64  # events of one worker sent in one message at most
BATCH_BYTES = 1 << 20  # ... or this many bytes of frames
REPORT_DELAY = 0.01  # progress reports wait this long to cover several events


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


class IngesterService(Service):
    kind = "ingester"

    def __init__(
        self,
        name: str,
        scheduler: str,
        streams: list[StreamConfig],
        *,
        record_dir: str | None = None,
    ) -> None:
        super().__init__(name, scheduler)
        self.record_dir = record_dir  # record every scan here unless the scan names a place
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
            "connected": {n: bool(s.upstream) for n, s in self.streams.items()},
            "scan": self.scan.number if self.scan else None,
            "upto": self.scan.upto if self.scan else None,
            "ledger": {n: s.ledger() for n, s in self.streams.items()},
        }

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
                self.scan.queue.put_nowait(msg.events)
        elif isinstance(msg, Finish) and self.scan is not None and msg.scan == self.scan.number:
            scan = self.scan
            summary = {"ledger": {n: self.streams[n].ledger() for n in scan.streams}}
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
            known = self.push.get(name)
            if known is None or known[0] != address:
                if known is not None:
                    known[1].sock.close(0)
                sock = transport.socket(zmq.PUSH)
                sock.connect(address)
                self.push[name] = (address, transport.FastSocket(sock))
        error = None
        for name in msg.streams:
            st = self.streams[name]
            self.dropped_total += st.framer.drops.total if st.framer else 0
            st.framer = get_protocol(st.config.protocol).framer()
            st.framer.on_new_drop = self._log_drop(name)
            st.buffer.clear()
            st.ended = None
            st.delivered = st.discarded = st.missing = st.bytes = 0
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
                st.buffer.extend(framed.data for framed in st.framer.flush())
                continue
            except Exception as exc:
                st.ended = f"{type(exc).__name__}: {exc}"
                self.log.error("stream %s: upstream failed: %s", st.config.name, st.ended)
                return None
            assert st.framer is not None
            for framed in st.framer.feed(message):
                st.buffer.append(framed.data)
        return st.buffer.popleft()

    async def _flush(self, scan: _Scan, only: str | None = None) -> None:
        for worker in [only] if only is not None else list(scan.outbox):
            box = scan.outbox.pop(worker, None)
            if box is not None:
                head = transport.pack_data_header(scan.number, box.table)
                await self.push[worker][1].send_multipart([head, *box.frames])

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
        ledger = {n: self.streams[n].ledger() for n in scan.streams}
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
                per_worker: dict[str, list[tuple[str, StreamData, int]]] = {}
                for stream, workers in routes.items():
                    st = self.streams[stream]
                    data = await self._next(st, scan)
                    if data is None:
                        st.missing += 1
                        continue
                    recorded[stream] = data
                    size = data.nbytes()
                    st.bytes += size
                    self.bytes_total += size
                    self.frames_total += 1
                    if not workers:
                        st.discarded += 1
                        continue
                    st.delivered += 1
                    for worker in workers:
                        per_worker.setdefault(worker, []).append((stream, data, size))
                for worker, items in per_worker.items():
                    box = scan.outbox.get(worker)
                    if box is None:
                        box = scan.outbox[worker] = _Outbox()
                    box.table.append((event, [(s, d.typ, d.length) for s, d, _ in items]))
                    for _, d, size in items:
                        box.frames.extend(d.frames)
                        box.nbytes += size
                    if len(box.table) >= BATCH_EVENTS or box.nbytes >= BATCH_BYTES:
                        await self._flush(scan, worker)
                if scan.recorder is not None and recorded:
                    scan.recorder.write(event, recorded)
                scan.upto = event
            if scan.queue.empty():
                await self._flush(scan)
                self._report_soon(scan)
