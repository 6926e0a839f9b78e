"""Raw TCP upstream (``tcp://host:port``): the PandA position-capture data port.

The PandA starts sending only after the client's ``"\\n"``, and answers it with ``"OK\\n"``;
the position capture framer skips that line, so the chunks go out exactly as they arrived.
Reading only when ``receive()`` is called keeps the socket buffers full when the ingester is
behind, which is TCP's own back-pressure: the PandA's send buffer fills, not our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tango_dranspose.core.events import Frame
from tango_dranspose.sources.upstream import (
    DEFAULT_CONNECT_TIMEOUT,
    BaseUpstream,
    UpstreamClosed,
    UpstreamError,
    UpstreamUrl,
    os_reason,
)

log = logging.getLogger(__name__)

HANDSHAKE = b"\n"
CHUNK = 1 << 16
_RETRY_FIRST, _RETRY_MAX = 0.05, 1.0


class TcpUpstream(BaseUpstream):
    """A TCP client; ``open()`` retries a refused connection for ``connect_timeout`` seconds."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        *,
        handshake: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        chunk_size: int = CHUNK,
    ) -> None:
        super().__init__(url)
        self.host = host
        self.port = port
        self.handshake = handshake
        self.connect_timeout = connect_timeout
        self.chunk_size = chunk_size
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closing = False

    @classmethod
    def from_url(cls, url: UpstreamUrl, *, connect_timeout: float | None = None) -> TcpUpstream:
        url.check_options(("handshake", "connect_timeout"))
        default_timeout = DEFAULT_CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        assert url.port is not None  # parse_url checked
        return cls(
            url.url,
            url.host,
            url.port,
            handshake=url.option("handshake", _flag, True),
            connect_timeout=url.option("connect_timeout", float, default_timeout),
        )

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._closing = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = _RETRY_FIRST
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=self.chunk_size),
                    max(deadline - loop.time(), 0.01),
                )
                break
            except (OSError, asyncio.TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else os_reason(exc)
                left = deadline - loop.time()
                if left <= 0:
                    raise UpstreamError(
                        self.stats.error(
                            f"{self.url}: cannot connect: {reason} "
                            f"(tried for {self.connect_timeout:g} s)"
                        )
                    ) from None
                log.debug("%s: connect failed (%s), retrying", self.url, reason)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, _RETRY_MAX)
        if self.handshake:
            try:
                writer.write(HANDSHAKE)
                await writer.drain()
            except OSError as exc:
                writer.close()
                raise UpstreamError(
                    self.stats.error(f"{self.url}: handshake failed: {os_reason(exc)}")
                ) from None
        self._reader, self._writer = reader, writer
        self.stats.connected = True
        self.stats.connections += 1
        log.info("%s: connected", self.url)

    async def receive(self) -> list[Frame]:
        reader = self._reader
        if reader is None:
            raise UpstreamClosed(f"{self.url} is not open")
        try:
            chunk = await reader.read(self.chunk_size)
        except OSError as exc:
            if self._closing:
                raise UpstreamClosed(f"{self.url} was closed") from None
            self._lost(f"{self.url}: connection lost: {os_reason(exc)}")
            raise UpstreamClosed(self.stats.last_error) from None
        if not chunk:
            if self._closing:
                raise UpstreamClosed(f"{self.url} was closed")
            self._lost(f"{self.url}: the peer closed the connection")
            raise UpstreamClosed(self.stats.last_error)
        return self._delivered([chunk])

    def _lost(self, text: str) -> None:
        self.stats.connected = False
        self.stats.error(text)
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._closing = True  # a receive() waiting now sees EOF and reports a clean close
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self._reader = None
        self.stats.connected = False
        log.info("%s: closed after %d bytes", self.url, self.stats.bytes)


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_flag.__name__ = "flag (0/1)"

__all__ = ["HANDSHAKE", "TcpUpstream"]
