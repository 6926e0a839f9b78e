"""ZMQ upstreams (``pull+tcp://``, ``sub+tcp://``) and the peer monitor the simulator shares.

Frames are received with ``copy=False``: large frames stay in ZMQ's buffers and reach the
framer and the workers as ``zmq.Frame`` views (small ones are copied by pyzmq anyway, which is
cheaper for them). RCVHWM bounds what the socket queues; beyond it a PUSH sender waits (a PUB
drops), so an ingester that falls behind slows its detector instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from tango_dranspose.core.events import Frame
from tango_dranspose.sources.upstream import (
    DEFAULT_HWM,
    BaseUpstream,
    UpstreamClosed,
    UpstreamError,
    UpstreamStats,
    UpstreamUrl,
)

log = logging.getLogger(__name__)
_monitor_ids = itertools.count()

_MONITORED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_MONITOR_STOPPED
)


class PeerMonitor:
    """Follows a socket's peers through ZMQ's monitor events.

    ``peers`` counts peers that completed the ZMTP handshake and have not gone; ``stats`` (when
    given) gets ``connected``, ``connections`` and one error per episode of an unreachable peer,
    not one per reconnect attempt (ZMQ retries every 100 ms).
    """

    def __init__(self, socket: zmq.asyncio.Socket, url: str, stats: UpstreamStats | None = None):
        self.url = url
        self.stats = stats
        self.peers = 0
        self.handshakes = 0  # peers that ever connected
        self._changed = asyncio.Event()
        self._retrying = False
        self._socket = socket
        # A unique address: pyzmq's default names it after the file descriptor, which a later
        # socket of the same (process-wide) context can reuse before the old monitor is gone.
        address = f"inproc://tango-dranspose-monitor-{next(_monitor_ids)}"
        self._monitor: zmq.asyncio.Socket = socket.get_monitor_socket(_MONITORED, address)
        self._task = asyncio.ensure_future(self._watch())

    async def wait_peers(self, count: int) -> None:
        """Return once at least ``count`` peers are connected."""
        while self.peers < count:
            self._changed.clear()
            await self._changed.wait()

    async def wait_new_reader(self, readers: int) -> None:
        """Return once ``readers`` peers have connected in all and only the last is there."""
        while self.handshakes < readers or self.peers != 1:
            self._changed.clear()
            await self._changed.wait()

    async def _watch(self) -> None:
        while True:
            try:
                msg = await self._monitor.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            event = parse_monitor_message(msg)["event"]
            if event == zmq.EVENT_MONITOR_STOPPED:
                return
            self._on_event(event)

    def _on_event(self, event: int) -> None:
        stats = self.stats
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.peers += 1
            self.handshakes += 1
            self._retrying = False
            if stats is not None:
                stats.connected = True
                stats.connections += 1
            log.info("%s: peer connected (%d connected)", self.url, self.peers)
        elif event == zmq.EVENT_DISCONNECTED:
            self.peers = max(self.peers - 1, 0)
            log.info("%s: peer disconnected (%d connected)", self.url, self.peers)
            if stats is not None:
                stats.connected = self.peers > 0
                stats.disconnects += 1
                stats.last_error = f"{self.url}: peer disconnected"
        elif event == zmq.EVENT_CONNECT_RETRIED:
            if not self._retrying and stats is not None:
                stats.error(f"{self.url}: nobody is listening there yet; ZMQ keeps retrying")
            self._retrying = True
        elif stats is not None:  # handshake failures
            stats.error(f"{self.url}: ZMTP handshake failed (is the peer a ZMQ socket?)")
        self._changed.set()

    async def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disable_monitor()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._monitor.close(linger=0)


def zmq_endpoint(url: UpstreamUrl) -> str:
    """The ZMQ address of a ``pull+tcp://`` style URL."""
    transport = url.scheme.split("+", 1)[1]
    if transport == "ipc":
        return f"ipc://{url.path}"
    return f"tcp://{url.endpoint()}"


class ZmqUpstream(BaseUpstream):
    """A PULL or SUB socket connected to the upstream while open."""

    def __init__(
        self,
        url: str,
        endpoint: str,
        kind: str,
        *,
        hwm: int = DEFAULT_HWM,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        super().__init__(url)
        if kind not in ("pull", "sub"):
            raise UpstreamError(f"{url}: a ZMQ upstream is pull or sub, not {kind!r}")
        if hwm < 1:
            raise UpstreamError(f"{url}: hwm must be at least 1 (0 would mean unbounded)")
        self.endpoint = endpoint
        self.kind = kind
        self.hwm = hwm
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: PeerMonitor | None = None
        self._pending: asyncio.Future[Any] | None = None
        self._shadow: zmq.Socket[Any] | None = None

    @classmethod
    def from_url(
        cls, url: UpstreamUrl, *, hwm: int | None = None, context: Any = None
    ) -> ZmqUpstream:
        url.check_options(("hwm",))
        return cls(
            url.url,
            zmq_endpoint(url),
            url.scheme.split("+", 1)[0],
            hwm=url.option("hwm", int, hwm if hwm is not None else DEFAULT_HWM),
            context=context,
        )

    async def open(self) -> None:
        if self._socket is not None:
            return
        context = self._context or zmq.asyncio.Context.instance()
        socket = context.socket(zmq.PULL if self.kind == "pull" else zmq.SUB)
        socket.rcvhwm = self.hwm
        socket.linger = 0  # what is unread when the scan ends belongs to no scan
        if self.kind == "sub":
            socket.subscribe(b"")
        # Monitor first: a handshake on loopback can complete before connect() returns.
        monitor = PeerMonitor(socket, self.url, self.stats)
        try:
            socket.connect(self.endpoint)
        except zmq.ZMQError as exc:
            await monitor.close()
            socket.close(linger=0)
            raise UpstreamError(self.stats.error(f"{self.url}: cannot connect: {exc}")) from None
        self._socket, self._monitor = socket, monitor
        log.info("%s: %s socket connecting (RCVHWM %d)", self.url, self.kind.upper(), self.hwm)

    async def receive(self) -> list[Frame]:
        socket = self._socket
        if socket is None:
            raise UpstreamClosed(f"{self.url} is not open")
        future: asyncio.Future[Any] = socket.recv_multipart(copy=False)  # type: ignore[assignment]
        if not future.done():
            self._pending = future
        try:
            frames = await future
        except zmq.ZMQError as exc:
            if self._socket is None:
                raise UpstreamClosed(f"{self.url} was closed") from None
            raise UpstreamError(self.stats.error(f"{self.url}: receive failed: {exc}")) from None
        finally:
            self._pending = None
        return self._delivered(frames)

    def receive_nowait(self) -> list[Frame] | None:
        """The next message if one is already waiting, else None (never blocks).

        Lets the ingester batch what is already there and flush only before a real wait.
        """
        socket = self._socket
        if socket is None or self._pending is not None:
            return None
        if self._shadow is None:
            self._shadow = zmq.Socket.shadow(socket.underlying)
        try:
            frames = self._shadow.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise UpstreamError(self.stats.error(f"{self.url}: receive failed: {exc}")) from None
        return self._delivered(frames)

    async def close(self) -> None:
        self._shadow = None
        socket, self._socket = self._socket, None
        if socket is None:
            return
        pending, self._pending = self._pending, None
        # A receive() waiting now gets UpstreamClosed; closing the socket would only cancel its
        # future, which the waiting task could not tell from its own cancellation.
        if pending is not None and not pending.done():
            pending.set_exception(UpstreamClosed(f"{self.url} was closed"))
        if self._monitor is not None:
            await self._monitor.close()
            self._monitor = None
        socket.close(linger=0)
        self.stats.connected = False
        log.info("%s: closed after %d messages", self.url, self.stats.messages)


__all__ = ["PeerMonitor", "ZmqUpstream", "zmq_endpoint"]
