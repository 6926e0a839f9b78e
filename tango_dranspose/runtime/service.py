"""What ingester, worker and reducer services share: the control connection to the scheduler.

A service connects a DEALER (identity = its name) to the scheduler's ROUTER, says hello, and
then reacts to control messages. It says hello again whenever the scheduler asks (a restarted
scheduler knows nobody) and sends its counters every second, which is also its heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from tango_dranspose.core.parameters import describe
from tango_dranspose.core.payload import close_payload, describe_class, load_class
from tango_dranspose.runtime import transport
from tango_dranspose.runtime.messages import (
    Hello,
    Message,
    ProtocolError,
    Status,
    Welcome,
    load_to_service,
)

STATUS_INTERVAL = 0.5  # also the heartbeat: the scheduler declares a silent worker dead after 1.8 s


class Service(ABC):
    kind: str = ""

    def __init__(self, name: str, scheduler: str) -> None:
        self.name = name
        self.scheduler_address = scheduler
        self.log = logging.getLogger(f"tango_dranspose.{self.kind}.{name}")
        self.control = transport.socket(zmq.DEALER, identity=name, hwm=100_000)
        self.control.connect(scheduler)
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once the data side is bound and hello sent
        self.protocol_errors = 0
        self.internal_errors = 0  # control messages or callbacks that failed (each logged)
        self.on_change: Callable[[], None] | None = None  # devices push change events from it
        self.last_heard: float | None = None  # monotonic time of the last scheduler message

    @abstractmethod
    def hello(self) -> Hello: ...

    @abstractmethod
    async def handle(self, msg: Message) -> None: ...

    def counters(self) -> dict[str, Any]:
        return {}

    async def send(self, msg: Message) -> None:
        await self.control.send(msg.dump())

    def send_nowait(self, msg: Message) -> None:
        """Queue a control message from synchronous code (the DEALER's queue is large)."""
        fut = asyncio.ensure_future(self.control.send(msg.dump()))
        fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.log.error("control message not sent: %r", fut.exception())

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.kind}:{self.name}:{name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)

    async def start(self) -> None:
        """Bind, say hello and start the background loops (returns at once)."""
        await self.setup()
        await self.send(self.hello())
        self.spawn(self._control_loop(), "control")
        self.spawn(self._status_loop(), "status")
        self.ready.set()

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Bind data sockets before hello (their addresses go into it)."""

    async def run(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.close()

    def request_stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.teardown()
        self.control.close(0)

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Close data sockets and payloads."""

    async def _control_loop(self) -> None:
        while True:
            raw = await self.control.recv()
            self.last_heard = time.monotonic()
            try:
                msg = load_to_service(raw)
            except ProtocolError as exc:
                self.protocol_errors += 1
                self.log.warning("ignoring control message: %s", exc)
                continue
            if isinstance(msg, Welcome):
                # The scheduler does not know us (it restarted): introduce ourselves again.
                await self.send(self.hello())
                continue
            try:
                await self.handle(msg)
            except Exception:
                self.internal_errors += 1
                self.log.exception("handling %s failed", type(msg).__name__)
            self.changed()

    @property
    def scheduler_reachable(self) -> bool:
        """Whether the scheduler answered recently (it answers every status report)."""
        return (
            self.last_heard is not None
            and time.monotonic() - self.last_heard < 3 * STATUS_INTERVAL + 1.0
        )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            counters = {
                **self.counters(),
                "protocol_errors": self.protocol_errors,
                "internal_errors": self.internal_errors,
            }
            await self.send(Status(counters=counters))

    def changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                self.internal_errors += 1
                self.log.exception("change callback failed")


class PayloadService(Service):
    """A service running a user payload on its own thread, fed through a bound PULL socket.

    The event loop only moves bytes; the thread (``_thread_main``) calls the payload, so a
    slow analysis never stalls control messages.
    """

    data_hwm = transport.DEFAULT_HWM  # messages the data socket queues

    def __init__(
        self,
        name: str,
        scheduler: str,
        payload: str,
        *,
        bind: str = "tcp://127.0.0.1:0",
        search: list[str] | None = None,
        queue_size: int = 0,
    ) -> None:
        super().__init__(name, scheduler)
        self.payload_spec = payload
        self.cls = load_class(payload, search or [])
        self.descriptions = describe_class(self.cls)
        # This payload's descriptions and, from each Arm, those of the pipeline's other
        # payloads: parameters are shared, so each payload sees all of them typed.
        self.all_descriptions: dict[str, Any] = dict(self.descriptions)
        self.bind_address = bind
        self.address = ""
        self.context: dict[str, Any] = {}  # survives across scans, as dranspose promises
        self._work: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def hello_fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "parameters": [d.model_dump(mode="json") for d in self.descriptions.values()],
            "payload": self.payload_spec,
            "pid": os.getpid(),
        }

    async def setup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.data = transport.socket(zmq.PULL, hwm=self.data_hwm)
        self.address = transport.bind(self.data, self.bind_address)
        self._thread = threading.Thread(
            target=self._thread_main, name=f"{self.kind}-{self.name}", daemon=True
        )
        self._thread.start()
        self.spawn(self._data_loop(), "data")

    async def teardown(self) -> None:
        self._work.put(None)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)
        self.data.close(0)

    def learn_descriptions(self, described: list[dict[str, Any]]) -> None:
        try:
            others = describe(described)
        except ValueError as exc:
            self.log.warning("ignoring parameter descriptions from the scheduler: %s", exc)
            return
        self.all_descriptions = {**others, **self.descriptions}

    def close_payload(self, payload: Any) -> None:
        """The process is shutting down: let the last payload instance release what it holds."""
        if payload is None:
            return
        try:
            close_payload(payload.instance, self.context)
        except Exception:
            self.internal_errors += 1
            self.log.exception("the payload's close() failed")

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the event loop (from the payload thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    @abstractmethod
    def _thread_main(self) -> None: ...

    @abstractmethod
    async def _data_loop(self) -> None: ...
