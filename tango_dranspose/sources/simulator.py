"""Simulated detectors: serve a :class:`~tango_dranspose.sources.messages.MessageSource` over a
real transport, as the detector, PandA or Sardana recorder would.

Transports: ``push`` (binds a ZMQ PUSH), ``pub`` (binds a ZMQ PUB; waits for a subscription so
that the slow joiner cannot miss the start message, and can send throw-away messages first),
``tcp`` (a PandA-like data port: waits for a client, reads its ``"\\n"``, answers ``"OK\\n"``,
then streams), ``http`` (POSTs each Sardana record to a recorder endpoint of a given
``http://host:port``). Binding to port 0 picks a free port; :attr:`Simulator.url` has it.

Use it inside an event loop (``await Simulator(...).run()``, or :func:`serve`) or from
synchronous code through :class:`SimulatorThread`. The ``simulate`` command is in
:mod:`tango_dranspose.sources.simulate_cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from tango_dranspose.sources.messages import Message, MessageSource
from tango_dranspose.sources.sim_transports import Sender, SimulatorError, make_sender
from tango_dranspose.sources.upstream import DEFAULT_HWM

log = logging.getLogger(__name__)

TRANSPORTS = ("push", "pub", "tcp", "http")
DEFAULT_ADDRESS = "tcp://127.0.0.1:0"
WARMUP_MESSAGE: Message = [b"{}"]
"""A throw-away message: every framer drops it (it is no start message; most count it as
malformed, some as arriving before the start)."""

_BY_TYP = {
    "STINS": "push",
    "EIGER_LEGACY": "push",
    "DECTRIS_STREAM2": "push",
    "PCAP_RAW": "tcp",
    "sardana": "http",
}
_YIELD_EVERY = 64  # messages sent back to back before letting other tasks run


def default_transport(typ: str | None) -> str:
    """How the real device serves protocol ``typ``: PULL-side detectors push, PandA position
    capture is TCP, Sardana posts HTTP, the others publish."""
    if typ is None:
        return "push"
    return _BY_TYP.get(typ, "pub")


@dataclass
class SimulatorStats:
    messages: int = 0
    bytes: int = 0
    sequences: int = 0
    """Completed passes through the source (``repeat`` when all went out)."""
    warmup: int = 0
    rejected: int = 0
    """HTTP posts answered with an error status."""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Simulator:
    """One simulated upstream device.

    ``address`` is where to bind (``tcp://host:port``; push, pub, tcp) or, for ``http``, the
    server to post to. ``interval`` paces messages (seconds, 0 = as fast as the transport takes
    them), ``repeat`` plays the whole sequence that many times (several scans), ``delay`` waits
    before the first message, ``wait_for_peer`` waits for that many peers first (pub:
    subscribers, push: connected PULL sockets, tcp: clients past the handshake, checked again
    before each repetition; http: a connection; default 1, except 0 for push, whose messages
    wait for a peer anyway). ``warmup`` throw-away messages precede the first (pub).
    ``hwm`` is the ZMQ send high-water mark; ``linger`` how long closing waits for queued
    messages to be delivered (tcp: for the client to hang up first).
    """

    def __init__(
        self,
        source: MessageSource,
        transport: str | None = None,
        address: str | None = None,
        *,
        interval: float = 0.0,
        repeat: int = 1,
        delay: float = 0.0,
        wait_for_peer: int | None = None,
        warmup: int = 0,
        hwm: int = DEFAULT_HWM,
        linger: float = 5.0,
        connect_timeout: float = 10.0,
        per_connection: bool = False,
    ) -> None:
        self.transport = transport or default_transport(source.typ)
        if self.transport not in TRANSPORTS:
            raise SimulatorError(f"unknown transport {transport!r}; use {', '.join(TRANSPORTS)}")
        if self.transport == "http" and address is None:
            raise SimulatorError("the http transport posts to a server: give its http://host:port")
        if interval < 0 or repeat < 0 or delay < 0 or warmup < 0 or linger < 0 or hwm < 1:
            raise SimulatorError("interval, repeat, delay, warmup, linger >= 0 and hwm >= 1")
        self.source = source
        self.interval = interval
        self.repeat = repeat
        self.delay = delay
        self.wait_for_peer = (
            wait_for_peer if wait_for_peer is not None else int(self.transport != "push")
        )
        self.warmup = warmup
        self.linger = linger
        # Each repetition to its own reader: after one, wait until the reader left (its scan
        # ended) and a new one came (the next scan armed), like a detector triggered per scan.
        self.per_connection = per_connection
        self.stats = SimulatorStats()
        self._sender: Sender = make_sender(
            self.transport, address or DEFAULT_ADDRESS, hwm=hwm, connect_timeout=connect_timeout
        )
        self._started = False
        self._closed = False

    @property
    def url(self) -> str:
        """The bound address (the port filled in once started), or the http target."""
        return self._sender.url

    @property
    def peers(self) -> int:
        return self._sender.peers

    async def start(self) -> str:
        """Bind (or, for http, nothing yet); returns :attr:`url`."""
        if not self._started:
            await self._sender.start()
            self._started = True
            log.info("simulator %s: %s %s", self.source.name, self.transport, self.url)
        return self.url

    async def run(self) -> SimulatorStats:
        """Start if needed, send everything, close; returns the counters. Runs once."""
        if self._closed:
            raise SimulatorError("this simulator has run and closed; make a new one")
        await self.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        linger = 0.0  # unless everything went out, do not wait for delivery
        try:
            await self._send_all(loop)
            linger = self.linger
        finally:
            self.stats.seconds = loop.time() - began
            await self.close(linger)
        return self.stats

    async def _send_all(self, loop: asyncio.AbstractEventLoop) -> None:
        sender, stats = self._sender, self.stats
        next_at: float | None = None
        for repetition in range(self.repeat):
            if self.per_connection and self.transport != "tcp":
                await sender.wait_new_reader(repetition + 1)
            elif self.wait_for_peer and (repetition == 0 or self.transport == "tcp"):
                await sender.wait_peers(self.wait_for_peer)
            if repetition == 0:
                if self.delay:
                    await asyncio.sleep(self.delay)
                for _ in range(self.warmup):
                    await sender.send(WARMUP_MESSAGE)
                    stats.warmup += 1
            for message in self.source.messages():
                if self.interval > 0:
                    now = loop.time()
                    # A schedule, not a sleep after each send, so the rate holds at small
                    # intervals; after a stall it resumes at the interval instead of bursting.
                    next_at = now if next_at is None else max(next_at, now - self.interval)
                    if next_at > now:
                        await asyncio.sleep(next_at - now)
                    next_at += self.interval
                elif stats.messages % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                await sender.send(message)
                stats.messages += 1
                stats.bytes += sum(len(frame) for frame in message)
            stats.sequences += 1
        stats.rejected = sender.rejected

    async def close(self, linger: float | None = None) -> None:
        """Unbind/disconnect; waits up to ``linger`` (default: the configured one) for delivery."""
        if self._closed:
            return
        self._closed = True
        await self._sender.close(self.linger if linger is None else linger)
        self.stats.rejected = self._sender.rejected

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(0.0)


async def serve(
    source: MessageSource,
    transport: str | None = None,
    address: str | None = None,
    **options: Any,
) -> SimulatorStats:
    """Run one :class:`Simulator` to the end (keyword options as for the class)."""
    return await Simulator(source, transport, address, **options).run()


class SimulatorThread:
    """A :class:`Simulator` on its own event loop in a daemon thread, for synchronous code::

    with SimulatorThread(stins_source(100), "push") as sim:
        connect_to(sim.url)
        ...
    sim.stats  # after the block: stopped (if still running) and joined
    """

    def __init__(
        self,
        source: MessageSource,
        transport: str | None = None,
        address: str | None = None,
        **options: Any,
    ) -> None:
        self._args = (source, transport, address)
        self._options = options
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[SimulatorStats] | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.stats = SimulatorStats()

    def start(self, timeout: float = 10.0) -> str:
        """Start the thread; returns the bound URL once bound."""
        self._thread.start()
        if not self._bound.wait(timeout):
            raise SimulatorError(f"the simulator did not bind within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self.url

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # handed to the caller's thread by join()
            self._error = exc
        finally:
            self._bound.set()

    async def _amain(self) -> None:
        simulator = Simulator(*self._args, **self._options)
        self.stats = simulator.stats
        self._loop = asyncio.get_running_loop()
        try:
            self.url = await simulator.start()
        except BaseException:
            await simulator.close(0.0)
            raise
        self._task = asyncio.current_task()
        self._bound.set()
        await simulator.run()

    def stop(self) -> None:
        """Cancel the run (from any thread); the simulator closes without lingering."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: it has finished anyway
                loop.call_soon_threadsafe(task.cancel)

    def join(self, timeout: float | None = None) -> SimulatorStats:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise SimulatorError(f"the simulator is still running after {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self.stats

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(10.0)


__all__ = [
    "TRANSPORTS",
    "Simulator",
    "SimulatorError",
    "SimulatorStats",
    "SimulatorThread",
    "default_transport",
    "serve",
]
