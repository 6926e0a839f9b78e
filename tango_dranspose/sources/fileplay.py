"""File upstream (``file:///abs/path.cbors?interval=0.001&repeat=1&stream=NAME``).

Plays a capture back through the same interface as a live upstream, so that an ingester and
its tests run without sockets. Reading is synchronous, one record per ``receive()``: records
are small next to the event loop's time slice, and a playback has nothing else to wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from tango_dranspose.core.capture import CaptureError
from tango_dranspose.core.events import Frame
from tango_dranspose.sources.messages import Message, MessageSource, capture_source
from tango_dranspose.sources.upstream import (
    BaseUpstream,
    UpstreamClosed,
    UpstreamError,
    UpstreamUrl,
)

log = logging.getLogger(__name__)


class FileUpstream(BaseUpstream):
    """A capture file as an upstream; ``receive()`` raises :class:`UpstreamClosed` at its end."""

    def __init__(
        self,
        url: str,
        path: str,
        *,
        interval: float = 0.0,
        repeat: int = 1,
        stream: str | None = None,
    ) -> None:
        super().__init__(url)
        if interval < 0 or repeat < 1:
            raise UpstreamError(f"{url}: interval must be >= 0 and repeat >= 1")
        self.path = path
        self.interval = interval
        self.repeat = repeat
        self.stream = stream
        self._source: MessageSource | None = None
        self._messages: Iterator[Message] | None = None
        self._next_at = 0.0

    @classmethod
    def from_url(cls, url: UpstreamUrl) -> FileUpstream:
        url.check_options(("interval", "repeat", "stream"))
        return cls(
            url.url,
            url.path,
            interval=url.option("interval", float, 0.0),
            repeat=url.option("repeat", int, 1),
            stream=url.options.get("stream"),
        )

    async def open(self) -> None:
        if self._messages is not None:
            return
        try:
            source = capture_source(self.path, self.stream)
        except (CaptureError, OSError) as exc:
            raise UpstreamError(self.stats.error(f"{self.url}: {exc}")) from None
        self._source = source
        self._messages = self._repeated(source)
        self._next_at = asyncio.get_running_loop().time()
        self.stats.connected = True
        self.stats.connections += 1

    def _repeated(self, source: MessageSource) -> Iterator[Message]:
        for _ in range(self.repeat):
            yield from source.messages()

    async def receive(self) -> list[Frame]:
        messages = self._messages
        if messages is None:
            raise UpstreamClosed(f"{self.url} is not open")
        if self.interval > 0:
            loop = asyncio.get_running_loop()
            # Paced against a schedule, not after each message, so rates hold at small intervals.
            delay = self._next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next_at = max(self._next_at, loop.time() - self.interval) + self.interval
        if self._messages is None:  # closed while waiting
            raise UpstreamClosed(f"{self.url} was closed")
        try:
            message = next(messages)
        except StopIteration:
            self.stats.connected = False
            raise UpstreamClosed(f"{self.url}: end of the file") from None
        except CaptureError as exc:
            self.stats.connected = False
            raise UpstreamClosed(self.stats.error(f"{self.url}: {exc}")) from None
        return self._delivered(list(message))

    async def close(self) -> None:
        if self._messages is None:
            return
        self._messages = None
        self._source = None
        self.stats.connected = False


__all__ = ["FileUpstream"]
