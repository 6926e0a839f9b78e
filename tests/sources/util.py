"""Helpers for the transport tests: bounded event loops, free ports, a raw HTTP client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tango_dranspose.core.events import frame_bytes
from tango_dranspose.sources.httpwire import HttpMessage, read_message
from tango_dranspose.sources.upstream import BaseUpstream

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Run ``coro`` in a fresh event loop, failing the test if it takes longer than ``timeout``."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_port() -> int:
    """A port nobody listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def receive_n(upstream: BaseUpstream, n: int, timeout: float = 5.0) -> list[list[Any]]:
    async def collect() -> list[list[Any]]:
        return [await upstream.receive() for _ in range(n)]

    return await asyncio.wait_for(collect(), timeout)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (state changed by ZMQ's I/O thread has no event to wait
    on), failing with TimeoutError after ``timeout``."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def as_bytes(message: list[Any]) -> list[bytes]:
    return [frame_bytes(f) for f in message]


async def http_exchange(port: int, raw: bytes, timeout: float = 5.0) -> HttpMessage:
    """Send ``raw`` (one or more requests) and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(
            read_message(reader, max_body=1 << 20, request=False), timeout
        )
        assert answer is not None, "the server closed without answering"
        return answer
    finally:
        writer.close()


async def expect_pending(awaitable: Awaitable[Any], timeout: float) -> None:
    """Assert that ``awaitable`` (a task, shielded) does not complete within ``timeout``."""
    try:
        await asyncio.wait_for(asyncio.shield(awaitable), timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"expected it to wait, but it completed within {timeout} s")
