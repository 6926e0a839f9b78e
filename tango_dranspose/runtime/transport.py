"""ZeroMQ plumbing shared by the services: sockets, binding to port 0, data headers."""

from __future__ import annotations

import json
import struct
from typing import Any

import zmq
import zmq.asyncio

DEFAULT_HWM = 1000


def context() -> zmq.asyncio.Context:
    return zmq.asyncio.Context.instance()


def bind(sock: zmq.Socket[Any], address: str) -> str:
    """Bind ``address`` (``tcp://host:0`` picks a free port) and return the real endpoint."""
    sock.bind(address)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)


def socket(kind: int, *, hwm: int = DEFAULT_HWM, identity: str | None = None) -> zmq.asyncio.Socket:
    sock = context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    return sock


# Ingester -> worker data header: a fixed prefix (scan, event, stream count) then, per stream,
# its name, typ and frame count. Packed by hand because it is built once per event and worker.
_PREFIX = struct.Struct("<IqH")


def pack_data_header(scan: int, event: int, streams: list[tuple[str, str, int]]) -> bytes:
    body = json.dumps(streams, separators=(",", ":")).encode()
    return _PREFIX.pack(scan, event, len(streams)) + body


def unpack_data_header(raw: bytes | memoryview) -> tuple[int, int, list[tuple[str, str, int]]]:
    view = memoryview(raw)
    if len(view) < _PREFIX.size:
        raise ValueError("data header too short")
    scan, event, count = _PREFIX.unpack_from(view)
    streams = json.loads(bytes(view[_PREFIX.size :]))
    if not isinstance(streams, list) or len(streams) != count:
        raise ValueError("data header stream table does not match its count")
    return scan, event, [(str(s[0]), str(s[1]), int(s[2])) for s in streams]


# Worker -> reducer result header: scan, event, then "worker\0parameters_hash".
_RESULT = struct.Struct("<Iq")


def pack_result_header(scan: int, event: int, worker: str, parameters_hash: str) -> bytes:
    return _RESULT.pack(scan, event) + f"{worker}\0{parameters_hash}".encode()


def unpack_result_header(raw: bytes | memoryview) -> tuple[int, int, str, str]:
    view = memoryview(raw)
    if len(view) < _RESULT.size:
        raise ValueError("result header too short")
    scan, event = _RESULT.unpack_from(view)
    worker, _, phash = bytes(view[_RESULT.size :]).decode().partition("\0")
    return scan, event, worker, phash
