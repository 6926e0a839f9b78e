"""ZMQ transports over real sockets: simulator PUSH/PUB -> pull+tcp / sub+tcp upstreams."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import zmq

from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.sources.messages import capture_source, pcap_source, stins_source
from tango_dranspose.sources.simulator import Simulator, SimulatorThread
from tango_dranspose.sources.upstream import (
    UpstreamClosed,
    UpstreamError,
    open_upstream,
    parse_url,
)
from tango_dranspose.sources.zmq_sources import ZmqUpstream
from tango_dranspose.streams.base import Kind
from tango_dranspose.streams.pcap import PCAPFramer, PCAPStart
from tango_dranspose.streams.pcap import parse as parse_pcap
from tango_dranspose.streams.stream1 import Stream1Data, Stream1Framer
from tango_dranspose.streams.stream1 import parse as parse_stins

from .util import as_bytes, expect_pending, free_port, receive_n, run, until


def upstream_for(sim: Simulator) -> ZmqUpstream:
    scheme = {"push": "pull+", "pub": "sub+"}[sim.transport]
    upstream = open_upstream(scheme + sim.url)
    assert isinstance(upstream, ZmqUpstream)
    return upstream


def test_push_to_pull_delivers_a_raw_capture_in_order_zero_copy(captures: Path) -> None:
    path = captures / "pcap-zmq.cbors"
    expected = list(read_raw_capture(path))
    assert len(expected) == 102

    async def scenario() -> None:
        sim = Simulator(capture_source(path), "push")
        await sim.start()
        upstream = upstream_for(sim)
        await upstream.open()
        sending = asyncio.create_task(sim.run())
        got = await receive_n(upstream, len(expected))
        stats = await asyncio.wait_for(sending, 5)
        await upstream.close()
        assert [as_bytes(m) for m in got] == expected
        assert all(isinstance(f, zmq.Frame) for m in got for f in m)
        assert stats.messages == upstream.stats.messages == 102
        assert stats.bytes == upstream.stats.bytes == sum(len(f) for m in expected for f in m)

    run(scenario())


def test_synthetic_stins_scan_parses_from_zero_copy_frames() -> None:
    frames, shape = 12, (300, 200)  # 120 kB images: beyond pyzmq's copy threshold

    async def scenario() -> None:
        sim = Simulator(stins_source(frames, shape, dtype="uint16"), "push")
        await sim.start()
        async with upstream_for(sim) as upstream:
            sending = asyncio.create_task(sim.run())
            got = await receive_n(upstream, frames + 2)
            await asyncio.wait_for(sending, 5)
        framer = Stream1Framer()
        events = [e for m in got for e in framer.feed(m)]
        assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * frames + [Kind.END]
        images = [parse_stins(e.data) for e in events[1:-1]]
        assert all(isinstance(i, Stream1Data) for i in images)
        first = images[0]
        assert isinstance(first, Stream1Data) and first.data is not None
        assert first.data.shape == shape and first.data.dtype == np.uint16
        assert isinstance(first.buffer, zmq.Frame)
        assert not first.data.flags.owndata  # a view of the received frame, not a copy
        ring = first.data.astype(float)
        assert ring[shape[0] // 2, shape[1] // 2] < ring.max() / 4  # a ring, dark in the middle

    run(scenario())


def test_pub_to_sub_delivers_the_start_message() -> None:
    rows = 45

    async def scenario() -> None:
        sim = Simulator(pcap_source(rows, rows_per_message=10), "pub", warmup=2)
        await sim.start()
        sending = asyncio.create_task(sim.run())  # before anyone subscribes: the slow joiner
        await expect_pending(sending, 0.2)
        upstream = upstream_for(sim)
        await upstream.open()
        got = await receive_n(upstream, 2 + 7)
        await asyncio.wait_for(sending, 5)
        await upstream.close()
        framer = PCAPFramer()
        events = [e for m in got for e in framer.feed(m)]
        assert framer.drops.total == 2  # the throw-away messages
        assert isinstance(parse_pcap(events[0].data), PCAPStart)
        assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * rows + [Kind.END]

    run(scenario())


def test_unread_pull_pushes_back_on_the_simulator_without_memory_growth() -> None:
    frames, shape = 150, (512, 512)  # 512 kB per image, 75 MB in all

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    async def scenario() -> None:
        sim = Simulator(stins_source(frames, shape), "push", hwm=2)
        await sim.start()
        upstream = open_upstream(f"pull+{sim.url}?hwm=2")
        await upstream.open()
        before = rss()
        sending = asyncio.create_task(sim.run())
        await expect_pending(sending, 1.0)
        stalled_at = sim.stats.messages
        await expect_pending(sending, 0.5)
        assert sim.stats.messages == stalled_at  # stuck, not trickling into memory
        assert stalled_at < frames // 2
        assert rss() - before < 40 << 20
        # Reading releases it: everything arrives.
        got = await receive_n(upstream, frames + 2, timeout=20)
        await asyncio.wait_for(sending, 5)
        await upstream.close()
        assert len(got) == frames + 2 and sim.stats.messages == frames + 2

    run(scenario(), timeout=30)


def test_close_wakes_a_waiting_receive_and_counts_nothing() -> None:
    async def scenario() -> None:
        sim = Simulator(stins_source(1), "push")
        await sim.start()
        upstream = upstream_for(sim)
        await upstream.open()
        await until(lambda: upstream.stats.connected)
        waiting = asyncio.create_task(upstream.receive())
        await expect_pending(waiting, 0.05)
        await upstream.close()
        with pytest.raises(UpstreamClosed):
            await asyncio.wait_for(waiting, 2)
        with pytest.raises(UpstreamClosed):
            await upstream.receive()
        await upstream.close()  # idempotent
        assert upstream.stats.connected is False and upstream.stats.errors == 0
        assert upstream.stats.connections == 1
        await sim.close(0)

    run(scenario())


def test_unreachable_upstream_is_reported_once_not_per_retry() -> None:
    async def scenario() -> None:
        upstream = open_upstream(f"pull+tcp://127.0.0.1:{free_port()}")
        await upstream.open()
        await until(lambda: upstream.stats.errors > 0)
        await asyncio.sleep(0.3)  # ZMQ retries every 100 ms meanwhile
        assert upstream.stats.errors == 1
        assert "nobody is listening" in (upstream.stats.last_error or "")
        assert not upstream.stats.connected
        await upstream.close()

    run(scenario())


def test_a_peer_going_away_is_counted_as_a_disconnect() -> None:
    async def scenario() -> None:
        sim = Simulator(stins_source(1), "push")
        await sim.start()
        upstream = upstream_for(sim)
        await upstream.open()
        await until(lambda: upstream.stats.connected)
        await sim.close(0)
        await until(lambda: not upstream.stats.connected)
        assert upstream.stats.disconnects == 1 and upstream.stats.last_error
        await upstream.close()

    run(scenario())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("zmq://host:1", "unknown scheme"),
        ("pull+tcp://host", "needs host:port"),
        ("pull+tcp://host:x", "port is not a number"),
        ("pull+tcp://host:1?hmw=3", "unknown option(s) hmw"),
        ("pull+tcp://host:1?hwm=many", "hwm='many' is not a valid int"),
        ("sub+tcp://host:1?hwm=0", "hwm must be at least 1"),
        ("file://relative/x.cbors", "file:///absolute/path"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(UpstreamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_upstream(url)


def test_url_options_override_defaults() -> None:
    upstream = open_upstream("sub+tcp://det:9999?hwm=7", hwm=100)
    assert isinstance(upstream, ZmqUpstream) and upstream.hwm == 7 and upstream.kind == "sub"
    assert upstream.endpoint == "tcp://det:9999"
    assert parse_url("pull+ipc:///tmp/x.sock").path == "/tmp/x.sock"


def test_simulator_thread_serves_synchronous_code() -> None:
    frames = 5
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvtimeo = 5000
    try:
        with SimulatorThread(stins_source(frames, (16, 16)), "push") as sim:
            assert sim.url.startswith("tcp://127.0.0.1:")
            pull.connect(sim.url)
            got = [pull.recv_multipart() for _ in range(frames + 2)]
        assert sim.stats.messages == frames + 2
        framer = Stream1Framer()
        assert len([e for m in got for e in framer.feed(m)]) == frames + 2
        stopped = SimulatorThread(stins_source(1), "push")  # nobody connects: stop() ends it
        stopped.start()
        stopped.stop()
        assert stopped.join(5).messages == 0
    finally:
        pull.close(linger=0)
        context.term()
