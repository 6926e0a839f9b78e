"""Just enough HTTP/1.1 over asyncio streams for the Sardana recorder's JSON posts.

Both directions: the upstream reads requests and writes responses; the simulator writes
requests and reads responses. Bodies come with ``Content-Length`` or chunked; sizes are bounded
so that a confused or hostile peer costs an error answer, not memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus

MAX_LINE = 1 << 16  # also the StreamReader limit both sides use
MAX_HEADERS = 100


class HttpError(Exception):
    """A message that cannot be read; ``status`` is the answer it deserves."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class HttpMessage:
    """A request (``start[0]`` method, ``[1]`` target) or response (``[1]`` status)."""

    start: list[str]
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"

    @property
    def path(self) -> str:
        return self.start[1].split("?", 1)[0] if len(self.start) > 1 else ""


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"a line of the HTTP head is longer than {MAX_LINE} bytes") from None


async def read_message(
    reader: asyncio.StreamReader,
    *,
    max_body: int,
    request: bool,
    writer: asyncio.StreamWriter | None = None,
) -> HttpMessage | None:
    """The next message on ``reader``; ``None`` when the peer closed before sending one.

    Raises :class:`HttpError` for a malformed message, ``asyncio.IncompleteReadError`` when the
    peer hung up in the middle of one. With ``writer``, a request's ``Expect: 100-continue`` is
    answered (curl waits a second for it before sending larger bodies).
    """
    try:
        first = await _line(reader)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise
    while request and first in (b"\r\n", b"\n"):  # RFC 9112: ignore blank lines before a request
        first = await _line(reader)
    try:
        text = first.decode("ascii").strip()
    except UnicodeDecodeError:
        raise HttpError(400, "the request line is not ASCII") from None
    parts = text.split(" ", 2)
    if request:
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, f"not an HTTP/1.x request line: {text[:80]!r}")
        version, start = parts[2], parts[:2]
    else:
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(502, f"not an HTTP/1.x status line: {text[:80]!r}")
        version, start = parts[0], parts[1:]
    message = HttpMessage(start, version, await _headers(reader))
    if writer is not None and message.headers.get("expect", "").lower() == "100-continue":
        length = message.headers.get("content-length", "0")
        if length.isdigit() and int(length) > max_body:
            raise HttpError(413, f"body of {length} bytes is larger than the limit of {max_body}")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    message.body = await _body(reader, message, max_body, request)
    return message


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        # Repeated headers combine (RFC 9110), so that two Content-Lengths are an error, not a
        # choice between them (the classic request smuggling).
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise HttpError(431, f"more than {MAX_HEADERS} header lines")


async def _body(
    reader: asyncio.StreamReader, message: HttpMessage, max_body: int, request: bool
) -> bytes:
    headers = message.headers
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(reader, max_body)
    length = headers.get("content-length")
    if length is None:
        if request or message.start[0] in ("204", "304") or message.start[0].startswith("1"):
            return b""
        return await _until_eof(reader, max_body)
    if not length.isdigit():
        raise HttpError(400, f"Content-Length {length!r} is not a number")
    size = int(length)
    if size > max_body:
        raise HttpError(413, f"body of {size} bytes is larger than the limit of {max_body}")
    return await reader.readexactly(size)


async def _chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        line = (await _line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            raise HttpError(400, f"malformed chunk size {line[:20]!r}") from None
        if size == 0:
            await _headers(reader)  # trailers, ignored
            return bytes(body)
        if len(body) + size > max_body:
            raise HttpError(413, f"chunked body larger than the limit of {max_body} bytes")
        body += await reader.readexactly(size)
        if (await _line(reader)).strip():
            raise HttpError(400, "chunk not followed by CRLF")


async def _until_eof(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = await reader.read(max_body + 1)
    if len(body) > max_body:
        raise HttpError(502, f"response body larger than the limit of {max_body} bytes")
    return body


def response(
    status: int, body: bytes, *, keep_alive: bool, headers: dict[str, str] | None = None
) -> bytes:
    """A complete response with a JSON body."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def request(method: str, path: str, host: str, body: bytes) -> bytes:
    """A complete request with a JSON body, keeping the connection open."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


__all__ = ["MAX_LINE", "HttpError", "HttpMessage", "read_message", "request", "response"]
