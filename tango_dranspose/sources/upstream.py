"""Upstream transports: how an ingester receives one source's messages, chosen by URL.

Every transport has the same asyncio interface (:class:`Upstream`): ``open()`` when a scan is
armed (an ingester connects upstream only while its stream is part of an armed scan, because an
unread PandA TCP port can stall a scan), ``receive()`` for the next message as a list of frames,
``close()`` when the scan ends (idempotent; a ``receive()`` waiting at that moment raises
:class:`UpstreamClosed`), and ``stats`` for the device's attributes.

URL schemes (options go in the query string, e.g. ``pull+tcp://det:9999?hwm=100``):

``pull+tcp://host:port``
    ZMQ PULL socket, connects (STINS, Eiger stream v1, Dectris stream v2). Frames are
    ``zmq.Frame`` received with ``copy=False`` (zero-copy). ``hwm``: RCVHWM (default 1000), so
    that an unread upstream pushes back on the PUSH side. ``pull+ipc://path`` also works.
``sub+tcp://host:port``
    ZMQ SUB socket subscribed to everything, connects (Xspress3, PandA PCAP, AlbaEM, Contrast,
    LeCroy). Same frames and ``hwm``; a PUB drops what a full subscriber cannot take, it never
    waits.
``tcp://host:port``
    Raw TCP client (PandA position capture). After connecting it sends ``"\\n"``; the PandA
    answers ``"OK\\n"``, which the position capture framer skips. Each message is ``[chunk]`` of
    the byte stream as it arrived. ``handshake=0`` skips the ``"\\n"``; ``connect_timeout``
    (seconds, default 5) is how long ``open()`` retries a refused connection.
``http://host:port``
    An HTTP/1.1 server bound on host:port taking the Sardana recorder's JSON POSTs on
    ``/v1/data_desc``, ``/v1/record_data``, ``/v1/record_end`` and ``/v1/custom_data``; each body
    is one message ``[body]`` (``type`` filled in from the endpoint when missing). Port 0 binds a
    free port (``HttpUpstream.port``). ``queue`` (default 64) bounds the posts held for
    ``receive()``; when full, a POST is answered only once there is room (back-pressure on the
    recorder). ``max_body`` (bytes, default 4 MiB) bounds one post.
``file:///abs/path.cbors``
    Plays a capture file back as an upstream (for tests): a raw capture's records, or one
    stream's events of an ingester dump (``stream=NAME`` when it holds several). ``interval``
    (seconds between messages, default 0) and ``repeat`` (times through the file, default 1).
    ``receive()`` raises :class:`UpstreamClosed` after the last message.

Failures never crash the event loop: ``open()`` raises :class:`UpstreamError` with a reason a
person can act on, ``receive()`` raises :class:`UpstreamClosed` when the peer or ``close()``
ended the connection, and every failure is logged and counted in ``stats``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from tango_dranspose.core.events import Frame

log = logging.getLogger(__name__)

DEFAULT_HWM = 1000
"""ZMQ receive high-water mark: messages queued per socket before the sender must wait."""
DEFAULT_HTTP_QUEUE = 64
DEFAULT_MAX_BODY = 4 << 20
DEFAULT_CONNECT_TIMEOUT = 5.0

SCHEMES = ("pull+tcp", "pull+ipc", "sub+tcp", "sub+ipc", "tcp", "http", "file")


class UpstreamError(Exception):
    """The upstream cannot be used; the message says which one and why."""


class UpstreamClosed(UpstreamError):
    """No more messages: ``close()`` was called, the peer hung up, or the file ended."""


@dataclass
class UpstreamStats:
    """Counters of one upstream, for a device's attributes (``FramesReceived``, ...).

    ``messages`` and ``bytes`` count what ``receive()`` delivered. ``connected`` means a live
    link: a ZMQ peer completed its handshake, the TCP connection is up, the HTTP server is
    listening, the file is open. ``errors`` counts failures (refused connections, peers that hung
    up, malformed requests); ``disconnects`` ZMQ peers that went away (ZMQ reconnects by
    itself, so that is not an error, but ``last_error`` says so); ``rejected`` the HTTP requests
    answered with an error; ``dropped`` posts accepted but never read because the upstream was
    closed first.
    """

    messages: int = 0
    bytes: int = 0
    connected: bool = False
    last_error: str | None = None
    errors: int = 0
    connections: int = 0
    disconnects: int = 0
    rejected: int = 0
    dropped: int = 0

    def error(self, text: str, *, level: int = logging.WARNING) -> str:
        """Record a failure (count, last error, one log line); returns ``text`` for raising."""
        self.errors += 1
        self.last_error = text
        log.log(level, "%s", text)
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Upstream(Protocol):
    """One upstream connection; see the module docstring for the URL schemes."""

    url: str
    stats: UpstreamStats

    async def open(self) -> None:
        """Connect or bind; called when a scan is armed. Raises :class:`UpstreamError`."""
        ...

    async def receive(self) -> list[Frame]:
        """The next upstream message: its frames (for byte streams: ``[chunk]``)."""
        ...

    async def close(self) -> None:
        """Disconnect or unbind; called when the scan ends. Idempotent."""
        ...


_U = TypeVar("_U", bound="BaseUpstream")
_T = TypeVar("_T")


class BaseUpstream:
    """Shared plumbing: ``async with`` opens and closes, ``async for`` receives until closed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stats = UpstreamStats()

    async def open(self) -> None:
        raise NotImplementedError

    async def receive(self) -> list[Frame]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _delivered(self, frames: list[Any]) -> list[Any]:
        self.stats.messages += 1
        self.stats.bytes += sum(len(f) for f in frames)
        return frames

    async def __aenter__(self: _U) -> _U:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> BaseUpstream:
        return self

    async def __anext__(self) -> list[Frame]:
        try:
            return await self.receive()
        except UpstreamClosed:
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def os_reason(exc: BaseException) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('h', 1)``."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


# --- URL handling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamUrl:
    """A parsed upstream URL: scheme, where, and the query options."""

    url: str
    scheme: str
    host: str
    port: int | None
    path: str
    options: dict[str, str]

    def option(self, name: str, convert: Callable[[str], _T], default: _T) -> _T:
        if name not in self.options:
            return default
        try:
            return convert(self.options[name])
        except ValueError:
            raise UpstreamError(
                f"{self.url}: option {name}={self.options[name]!r} is not a valid "
                f"{getattr(convert, '__name__', 'value')}"
            ) from None

    def check_options(self, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            known = ", ".join(allowed) or "none"
            raise UpstreamError(
                f"{self.url}: unknown option(s) {', '.join(unknown)} for {self.scheme}:// "
                f"(known: {known})"
            )

    def endpoint(self) -> str:
        """``host:port``, as it goes into a ZMQ or socket address."""
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> UpstreamUrl:
    """Split an upstream URL; :class:`UpstreamError` names what is wrong and the known schemes."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UpstreamError(
            f"upstream URL {url!r}: unknown scheme {parts.scheme!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise UpstreamError(f"upstream URL {url!r}: write file URLs as file:///absolute/path")
    if scheme in ("file", "pull+ipc", "sub+ipc"):
        if not parts.path:
            raise UpstreamError(f"upstream URL {url!r} needs a path")
        return UpstreamUrl(url, scheme, parts.hostname or "", None, parts.path, options)
    try:
        port = parts.port
    except ValueError:
        raise UpstreamError(f"upstream URL {url!r}: the port is not a number") from None
    if not parts.hostname or port is None:
        raise UpstreamError(f"upstream URL {url!r} needs host:port, e.g. {scheme}://det:9999")
    return UpstreamUrl(url, scheme, parts.hostname, port, parts.path, options)


def open_upstream(
    url: str,
    *,
    hwm: int | None = None,
    queue: int | None = None,
    connect_timeout: float | None = None,
    context: Any = None,
) -> BaseUpstream:
    """The upstream for ``url`` (not yet opened). Keyword arguments are defaults that the URL's
    query options override; ``context`` is the ``zmq.asyncio.Context`` for ZMQ schemes (default:
    the process-wide instance)."""
    parsed = parse_url(url)
    scheme = parsed.scheme
    if scheme.startswith(("pull+", "sub+")):
        from tango_dranspose.sources.zmq_sources import ZmqUpstream

        return ZmqUpstream.from_url(parsed, hwm=hwm, context=context)
    if scheme == "tcp":
        from tango_dranspose.sources.tcp import TcpUpstream

        return TcpUpstream.from_url(parsed, connect_timeout=connect_timeout)
    if scheme == "http":
        from tango_dranspose.sources.http_upstream import HttpUpstream

        return HttpUpstream.from_url(parsed, queue=queue)
    from tango_dranspose.sources.fileplay import FileUpstream

    return FileUpstream.from_url(parsed)


def describe_schemes() -> Mapping[str, str]:
    """One line per scheme, for help texts."""
    return {
        "pull+tcp://host:port": "ZMQ PULL, connects (STINS, Eiger); option hwm",
        "sub+tcp://host:port": "ZMQ SUB to everything, connects (Xspress3, PCAP, ...); option hwm",
        "tcp://host:port": "raw TCP client, sends the PandA handshake; options handshake, "
        "connect_timeout",
        "http://host:port": "HTTP server for the Sardana recorder's POSTs; options queue, max_body",
        "file:///path.cbors": "capture playback; options interval, repeat, stream",
    }


__all__ = [
    "DEFAULT_HWM",
    "BaseUpstream",
    "Upstream",
    "UpstreamClosed",
    "UpstreamError",
    "UpstreamStats",
    "UpstreamUrl",
    "describe_schemes",
    "open_upstream",
    "os_reason",
    "parse_url",
]
