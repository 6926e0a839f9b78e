"""How a simulated detector hands its messages out: ZMQ PUSH/PUB, a PandA-like TCP server, or
HTTP posts like the Sardana recorder's. One :class:`Sender` per simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from tango_dranspose.sources.http_upstream import ENDPOINTS
from tango_dranspose.sources.httpwire import MAX_LINE, HttpError, read_message, request
from tango_dranspose.sources.messages import Message
from tango_dranspose.sources.upstream import os_reason
from tango_dranspose.sources.zmq_sources import PeerMonitor

log = logging.getLogger(__name__)

HANDSHAKE_REPLY = b"OK\n"
_PATHS = {kind: path for path, kind in ENDPOINTS.items()} | {"CustomData": "/v1/custom_data"}


class SimulatorError(Exception):
    """The simulator cannot serve what it was asked to; the message says why."""


def host_port(url: str, scheme: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != scheme or not parts.hostname or port is None:
        raise SimulatorError(f"{url!r}: expected {scheme}://host:port (port 0 picks a free one)")
    return parts.hostname, port


class Sender:
    """Base: ``start()`` binds or connects, ``send()`` waits while the peer cannot take more."""

    url: str
    peers: int = 0
    rejected: int = 0

    async def start(self) -> None:
        raise NotImplementedError

    async def wait_peers(self, count: int) -> None:
        raise NotImplementedError

    async def wait_new_reader(self, readers: int) -> None:
        """Until the ``readers``-th reader is connected, alone (the one before left: its
        scan ended); senders that cannot tell wait for any peer."""
        await self.wait_peers(1)

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    async def close(self, linger: float) -> None:
        raise NotImplementedError


class ZmqSender(Sender):
    """PUSH, or PUB (an XPUB, which reports each subscription, so that waiting for a subscriber
    means its subscription is in place and the start message cannot be lost)."""

    def __init__(self, kind: str, address: str, hwm: int) -> None:
        self.kind = kind
        self.url = address
        self.hwm = hwm
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: PeerMonitor | None = None
        self._subscriptions: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        # An own context, so that close() can wait for delivery (term) without touching others.
        self._context = zmq.asyncio.Context()
        socket = self._context.socket(zmq.PUSH if self.kind == "push" else zmq.XPUB)
        socket.sndhwm = self.hwm
        if self.kind == "pub":
            socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, even duplicates
        if self.kind == "push":
            self._monitor = PeerMonitor(socket, self.url)
        try:
            socket.bind(self.url)
        except zmq.ZMQError as exc:
            if self._monitor is not None:
                await self._monitor.close()
                self._monitor = None
            socket.close(linger=0)
            raise SimulatorError(f"cannot bind {self.url}: {exc}") from None
        self._socket = socket
        self.url = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        if self._monitor is not None:
            self._monitor.url = self.url
        else:
            self._subscriptions = asyncio.ensure_future(self._follow_subscriptions(socket))

    async def _follow_subscriptions(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frame = await socket.recv()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            if frame[:1] == b"\x01":
                self.peers += 1
            elif frame[:1] == b"\x00":
                self.peers = max(self.peers - 1, 0)
            self._changed.set()

    async def wait_new_reader(self, readers: int) -> None:
        if self._monitor is not None:
            await self._monitor.wait_new_reader(readers)
            return
        await self.wait_peers(1)

    async def wait_peers(self, count: int) -> None:
        if self._monitor is not None:
            await self._monitor.wait_peers(count)
            return
        while self.peers < count:
            self._changed.clear()
            await self._changed.wait()

    async def send(self, message: Message) -> None:
        assert self._socket is not None
        await self._socket.send_multipart(message, copy=False)

    async def close(self, linger: float) -> None:
        if self._subscriptions is not None:
            self._subscriptions.cancel()
        if self._monitor is not None:
            self.peers = self._monitor.peers
            await self._monitor.close()
        if self._socket is not None:
            self._socket.close(linger=int(linger * 1000))
            self._socket = None
        # term() returns once queued messages reached their peers or the linger expired.
        if self._context is not None:
            await asyncio.to_thread(self._context.term)
            self._context = None


class TcpSender(Sender):
    """A PandA-like data port: each client sends a line (``"\\n"``), gets ``"OK\\n"``, and from
    then on receives the stream; several clients each get everything, as from a PandA."""

    def __init__(self, address: str, handshake_timeout: float = 10.0) -> None:
        self.host, self.port = host_port(address, "tcp")
        self.url = address
        self.handshake_timeout = handshake_timeout
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._client, self.host, self.port)
        except OSError as exc:
            raise SimulatorError(f"cannot listen on {self.url}: {os_reason(exc)}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"tcp://{self.host}:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.wait_for(reader.readline(), self.handshake_timeout)
            writer.write(HANDSHAKE_REPLY)
            await writer.drain()
            self._clients[writer] = peer
            self.peers = len(self._clients)
            self._changed.set()
            log.info("%s: client %s connected", self.url, peer)
            while await reader.read(MAX_LINE):  # a client only talks in the handshake
                pass
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("%s: client %s: %s", self.url, peer, exc or type(exc).__name__)
        except asyncio.CancelledError:
            pass  # close(); ending cancelled would make asyncio's stream callback log an error
        finally:
            self._tasks.discard(task)
            if self._clients.pop(writer, None) is not None:
                log.info("%s: client %s disconnected", self.url, peer)
            self.peers = len(self._clients)
            self._changed.set()
            writer.close()

    async def wait_peers(self, count: int) -> None:
        while self.peers < count:
            self._changed.clear()
            await self._changed.wait()

    async def send(self, message: Message) -> None:
        clients = list(self._clients)
        for writer in clients:
            for chunk in message:
                writer.write(chunk)
        results = await asyncio.gather(*(w.drain() for w in clients), return_exceptions=True)
        for writer, result in zip(clients, results, strict=True):
            if isinstance(result, Exception):
                log.warning("%s: client %s lost: %s", self.url, self._clients.get(writer), result)
                self._clients.pop(writer, None)
                writer.close()
        self.peers = len(self._clients)

    async def close(self, linger: float) -> None:
        # Give clients `linger` seconds to hang up first: an ingester that reads END and closes
        # should not see the end of the stream as a lost connection.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._all_gone(), linger)
        for writer in list(self._clients):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _all_gone(self) -> None:
        while self._clients:
            self._changed.clear()
            await self._changed.wait()


class HttpSender(Sender):
    """Posts each message to the recorder endpoint of its ``type``, on one kept-alive
    connection (reconnecting when the server closed it)."""

    def __init__(self, target: str, connect_timeout: float = 10.0) -> None:
        self.host, self.port = host_port(target, "http")
        self.url = f"http://{self.host}:{self.port}"
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        pass  # nothing to bind; the connection is made on the first post

    async def wait_peers(self, count: int) -> None:
        if count > 0:
            await self._connect()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, limit=MAX_LINE
                )
                return
            except OSError as exc:
                if loop.time() >= deadline:
                    raise SimulatorError(
                        f"cannot connect to {self.url}: {os_reason(exc)} "
                        f"(tried for {self.connect_timeout:g} s)"
                    ) from None
                await asyncio.sleep(0.05)

    async def send(self, message: Message) -> None:
        path = _endpoint(message)
        body = message[0]
        for attempt in (1, 2):
            if self._writer is None:
                await self._connect()
            assert self._reader is not None and self._writer is not None
            error: Exception | None = None
            try:
                self._writer.write(request("POST", path, f"{self.host}:{self.port}", body))
                await self._writer.drain()
                answer = await read_message(self._reader, max_body=MAX_LINE, request=False)
            except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
                answer, error = None, exc
            if answer is None:
                self._drop_connection()
                if attempt == 2:
                    raise SimulatorError(f"POST {self.url}{path} failed: {error or 'no answer'}")
                continue  # a kept-alive connection the server had closed: once more, afresh
            status = int(answer.start[0])
            if status >= 300:
                self.rejected += 1
                log.warning("POST %s%s: %s %s", self.url, path, status, answer.body[:200])
            if not answer.keep_alive:
                self._drop_connection()
            return

    def _drop_connection(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def close(self, linger: float) -> None:
        writer = self._writer
        self._drop_connection()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _endpoint(message: Message) -> str:
    if len(message) != 1:
        raise SimulatorError(f"an HTTP post carries one JSON body, this message has {len(message)}")
    try:
        kind: Any = json.loads(message[0]).get("type")
    except (ValueError, AttributeError):
        raise SimulatorError("an HTTP post carries a JSON object with a 'type'") from None
    path = _PATHS.get(kind) if isinstance(kind, str) else None
    if path is None:
        known = ", ".join(k for k in _PATHS)
        raise SimulatorError(f"no recorder endpoint for type {kind!r} (known: {known})")
    return path


def make_sender(transport: str, address: str, *, hwm: int, connect_timeout: float = 10.0) -> Sender:
    if transport in ("push", "pub"):
        return ZmqSender(transport, address, hwm)
    if transport == "tcp":
        return TcpSender(address)
    if transport == "http":
        return HttpSender(address, connect_timeout)
    raise SimulatorError(f"unknown transport {transport!r}; use push, pub, tcp or http")


__all__ = [
    "HttpSender",
    "Sender",
    "SimulatorError",
    "TcpSender",
    "ZmqSender",
    "make_sender",
]
