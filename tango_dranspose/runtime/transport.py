"""ZeroMQ plumbing shared by the services: sockets, binding to port 0, data headers."""

from __future__ import annotations

import json
import socket as _socket
import struct
from typing import Any

import zmq
import zmq.asyncio

DEFAULT_HWM = 1000


def context() -> zmq.asyncio.Context:
    return zmq.asyncio.Context.instance()


def bind(sock: zmq.Socket[Any], address: str) -> str:
    """Bind ``address`` (``tcp://host:0`` picks a free port) and return the endpoint others
    connect to: bound to all interfaces (0.0.0.0 or *), that is this host's name."""
    sock.bind(address)
    raw = sock.getsockopt(zmq.LAST_ENDPOINT)
    endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
    if endpoint.startswith("tcp://0.0.0.0:"):
        endpoint = f"tcp://{_socket.getfqdn()}:{endpoint.rsplit(':', 1)[1]}"
    return endpoint


def socket(kind: int, *, hwm: int = DEFAULT_HWM, identity: str | None = None) -> zmq.asyncio.Socket:
    sock = context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    return sock


# Ingester -> worker data message: one header frame, then the frames of one or more events.
# The header is a fixed prefix (scan, event count) and a JSON table, per event, of its number
# and, per stream, the stream's name, typ and frame count. Several events travel in one
# message when they are ready together: it saves a ZeroMQ round of calls per event.
_PREFIX = struct.Struct("<II")

# The typ of a stream entry with no frames: its frames were to be sent again after a worker
# died, and were no longer kept. The worker counts the event lost instead of processing it.
LOST_TYP = "__lost__"
# ... and of a frame that never came (the upstream ended or restarted first): the worker
# processes the event with the streams it has, or acknowledges it without calling the payload.
MISSING_TYP = "__missing__"

EventTable = list[tuple[int, list[tuple[str, str, int]]]]


def pack_data_header(scan: int, events: EventTable) -> bytes:
    body = json.dumps(events, separators=(",", ":")).encode()
    return _PREFIX.pack(scan, len(events)) + body


def unpack_data_header(raw: bytes | memoryview) -> tuple[int, EventTable]:
    view = memoryview(raw)
    if len(view) < _PREFIX.size:
        raise ValueError("data header too short")
    scan, count = _PREFIX.unpack_from(view)
    table = json.loads(bytes(view[_PREFIX.size :]))
    if not isinstance(table, list) or len(table) != count:
        raise ValueError("data header event table does not match its count")
    return scan, [
        (int(e), [(str(s[0]), str(s[1]), int(s[2])) for s in streams]) for e, streams in table
    ]


# Worker -> reducer result message: one header frame, then each result's frames. The header
# is a prefix (scan, result count) and JSON: the worker, the parameters hash and, per result,
# its event number, frame count and, for an event sent again after a worker died, the worker
# it was first given to (its *origin*: the reducer keeps one result per event and origin).
_RESULT = struct.Struct("<II")

ResultTable = list[tuple[int, int] | tuple[int, int, str]]


def pack_result_header(
    scan: int, worker: str, parameters_hash: str, results: ResultTable, seq: int = -1
) -> bytes:
    body = json.dumps([worker, parameters_hash, results, seq], separators=(",", ":")).encode()
    return _RESULT.pack(scan, len(results)) + body


def unpack_result_header(
    raw: bytes | memoryview,
) -> tuple[int, str, str, list[tuple[int, int, str]], int]:
    """(scan, worker, parameters hash, [(event, frame count, origin)], message seq)."""
    view = memoryview(raw)
    if len(view) < _RESULT.size:
        raise ValueError("result header too short")
    scan, count = _RESULT.unpack_from(view)
    worker, phash, table, *rest = json.loads(bytes(view[_RESULT.size :]))
    if not isinstance(table, list) or len(table) != count:
        raise ValueError("result header table does not match its count")
    worker = str(worker)
    return (
        scan,
        worker,
        str(phash),
        [(int(r[0]), int(r[1]), str(r[2]) if len(r) > 2 else worker) for r in table],
        int(rest[0]) if rest else -1,
    )


# Below this size a zero-copy send costs more (frame tracking) than copying the bytes.
ZERO_COPY_MIN = 65536


def send_parts(sock: zmq.Socket[Any], parts: list[Any], flags: int = 0) -> None:
    """Send a multipart message, zero-copy only for the parts large enough to gain from it."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        size = (
            part.nbytes
            if isinstance(part, memoryview)
            else len(part)
            if isinstance(part, bytes)
            else ZERO_COPY_MIN
        )
        sock.send(part, flags | (zmq.SNDMORE if i < last else 0), copy=size < ZERO_COPY_MIN)


class FastSocket:
    """An asyncio socket that awaits only when it must.

    zmq.asyncio costs tens of microseconds per awaited call. Under load a socket almost always
    has the next message ready (or room for the next send), so this tries the operation
    non-blocking on a shadow of the same socket first and awaits only when ZeroMQ says EAGAIN.
    """

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self.sock = sock
        self.sync: zmq.Socket[Any] = zmq.Socket.shadow(sock.underlying)

    async def recv_batch(self, limit: int = 512) -> list[list[zmq.Frame]]:
        """At least one message, plus whatever else is already waiting (up to ``limit``)."""
        batch = [await self.sock.recv_multipart(copy=False)]
        sync = self.sync
        while len(batch) < limit:
            try:
                batch.append(sync.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        return batch

    async def send_multipart(self, frames: list[Any]) -> None:
        try:
            self.sync.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            await self.sock.send_multipart(frames, copy=False)
