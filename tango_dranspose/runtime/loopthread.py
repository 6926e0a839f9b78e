"""An asyncio loop on its own thread, for hosts that are not asyncio themselves.

A Tango device server answers requests on omniORB threads. Running the runtime services on
their own loop keeps the data plane off those threads (a slow client never delays a frame) and
lets the device stay a synchronous server, which answers a read in a fraction of the time an
asyncio-mode server needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Owns one event loop running on one daemon thread.

    ``thread_context`` wraps the thread's whole life (a device passes ``tango.EnsureOmniThread``
    so that code on the loop may call Tango).
    """

    def __init__(
        self,
        name: str,
        thread_context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.name = name
        self._context = thread_context or contextlib.nullcontext
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        with self._context():
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(self._started.set)
            self.loop.run_forever()
            # Let cancelled tasks run their cleanup before the loop goes away.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{self.name}: call() from the loop's own thread would deadlock")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self.name}: no result within {timeout} s") from None

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
