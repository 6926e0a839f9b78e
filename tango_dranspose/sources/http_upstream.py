"""HTTP upstream (``http://host:port``): a small server for the Sardana recorder's posts.

Written on asyncio streams so that the ingester needs no web framework. Each accepted POST
becomes one message ``[body]``. A post is answered only once its body is in the bounded queue
that ``receive()`` reads: when the ingester falls behind, the recorder's next post waits, and
memory stays bounded. Everything else gets a 4xx answer with a reason in JSON and is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from tango_dranspose.core.events import Frame
from tango_dranspose.sources.httpwire import (
    MAX_LINE,
    HttpError,
    HttpMessage,
    read_message,
    response,
)
from tango_dranspose.sources.upstream import (
    DEFAULT_HTTP_QUEUE,
    DEFAULT_MAX_BODY,
    BaseUpstream,
    UpstreamClosed,
    UpstreamError,
    UpstreamUrl,
    os_reason,
)

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, str] = {
    "/v1/data_desc": "DataDescription",
    "/v1/record_data": "RecordData",
    "/v1/record_end": "RecordEnd",
    "/v1/custom_data": "custom_data",
}
"""The recorder's endpoints and the ``type`` a post without one gets."""

REQUEST_TIMEOUT = 300.0
"""Seconds a connection may take to send its next request (idle keep-alive included)."""
MAX_CONNECTIONS = 64


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


class HttpUpstream(BaseUpstream):
    """An HTTP/1.1 server bound while open; ``port`` is the bound port (port 0 picks one)."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        *,
        queue: int = DEFAULT_HTTP_QUEUE,
        max_body: int = DEFAULT_MAX_BODY,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(url)
        if queue < 1:
            raise UpstreamError(f"{url}: queue must be at least 1")
        self.host = host
        self.port = port
        self.queue_size = queue
        self.max_body = max_body
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[list[bytes] | None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._posting: set[asyncio.Task[Any]] = set()  # handlers waiting for room in the queue

    @classmethod
    def from_url(cls, url: UpstreamUrl, *, queue: int | None = None) -> HttpUpstream:
        url.check_options(("queue", "max_body"))
        assert url.port is not None  # parse_url checked
        return cls(
            url.url,
            url.host,
            url.port,
            queue=url.option("queue", int, queue if queue is not None else DEFAULT_HTTP_QUEUE),
            max_body=url.option("max_body", int, DEFAULT_MAX_BODY),
        )

    @property
    def bound_url(self) -> str:
        """``http://host:port`` with the port actually bound."""
        return f"http://{self.host}:{self.port}"

    async def open(self) -> None:
        if self._server is not None:
            return
        self._queue = asyncio.Queue(self.queue_size)
        try:
            self._server = await asyncio.start_server(
                self._connection, self.host, self.port, limit=MAX_LINE
            )
        except OSError as exc:
            reason = os_reason(exc)
            raise UpstreamError(
                self.stats.error(f"{self.url}: cannot listen on {self.host}:{self.port}: {reason}")
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.stats.connected = True
        log.info("%s: listening on port %d", self.url, self.port)

    async def receive(self) -> list[Frame]:
        queue = self._queue
        if queue is None:
            raise UpstreamClosed(f"{self.url} is not open")
        item = await queue.get()
        if item is None:
            queue.put_nowait(None)  # every later receive() sees the close too
            raise UpstreamClosed(f"{self.url} was closed")
        return self._delivered(list(item))

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        queue = self._queue
        assert queue is not None
        unread = 0
        while not queue.empty():
            unread += queue.get_nowait() is not None
        if unread:
            self.stats.dropped += unread
            log.warning("%s: closed with %d posts accepted but not read", self.url, unread)
        queue.put_nowait(None)
        self.stats.connected = False
        log.info("%s: closed after %d posts", self.url, self.stats.messages)

    # --- one client connection -----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats.connections += 1
        peer = _peer(writer)
        try:
            if len(self._handlers) > self.max_connections:
                self._reject(writer, peer, 503, f"more than {self.max_connections} connections")
                return
            await self._requests(reader, writer, peer)
        except asyncio.CancelledError:
            # close(). A post waiting for room is told so, instead of the connection just
            # dropping; idle connections simply close. Not re-raised: asyncio's stream callback
            # would log a cancelled handler as an error.
            if task in self._posting:
                with contextlib.suppress(Exception):
                    self._reject(
                        writer, peer, 503, "the ingester closed this upstream (scan ended)"
                    )
        except (ConnectionError, asyncio.IncompleteReadError):
            self.stats.error(f"{self.url}: {peer} hung up in the middle of a request")
        except asyncio.TimeoutError:
            log.info("%s: %s idle for %g s, closing", self.url, peer, self.request_timeout)
        finally:
            self._handlers.discard(task)
            self._posting.discard(task)
            writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        while True:
            try:
                message = await asyncio.wait_for(
                    read_message(reader, max_body=self.max_body, request=True, writer=writer),
                    self.request_timeout,
                )
            except HttpError as exc:
                self._reject(writer, peer, exc.status, exc.reason)
                return
            if message is None:
                return
            status, body, extra = await self._handle(message)
            if status >= 400:
                self._count_rejection(peer, message, status, body)
            writer.write(response(status, body, keep_alive=message.keep_alive, headers=extra))
            await writer.drain()
            if not message.keep_alive:
                return

    async def _handle(self, message: HttpMessage) -> tuple[int, bytes, dict[str, str]]:
        method, path = message.start[0], message.path
        kind = ENDPOINTS.get(path)
        if kind is None:
            known = ", ".join(ENDPOINTS)
            return 404, _json({"error": f"no endpoint {path}; the recorder posts to {known}"}), {}
        if method != "POST":
            reason = f"{method} {path}: only POST is accepted here"
            return 405, _json({"error": reason}), {"Allow": "POST"}
        try:
            obj = json.loads(message.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, _json({"error": f"body is not JSON: {exc}"}), {}
        if not isinstance(obj, dict):
            reason = f"body must be a JSON object, got {type(obj).__name__}"
            return 400, _json({"error": reason}), {}
        body = message.body
        if "type" not in obj:
            obj["type"] = kind
            body = json.dumps(obj).encode()
        assert self._queue is not None
        task = asyncio.current_task()
        assert task is not None
        self._posting.add(task)
        await self._queue.put([body])  # waits while the queue is full: back-pressure
        self._posting.discard(task)
        return 200, _json({"status": "accepted", "type": str(obj["type"])}), {}

    def _count_rejection(self, peer: str, message: HttpMessage, status: int, body: bytes) -> None:
        self.stats.rejected += 1
        reason = json.loads(body).get("error", "")
        self.stats.error(f"{self.url}: {peer}: {' '.join(message.start[:2])}: {status} {reason}")

    def _reject(self, writer: asyncio.StreamWriter, peer: str, status: int, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.error(f"{self.url}: {peer}: {status} {reason}")
        writer.write(response(status, _json({"error": reason}), keep_alive=False))


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)


__all__ = ["ENDPOINTS", "HttpUpstream"]
