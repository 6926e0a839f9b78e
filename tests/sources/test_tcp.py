"""PandA position capture over TCP: the simulator's data port -> the tcp:// upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tango_dranspose.core.capture import read_dump
from tango_dranspose.sources.messages import capture_source, positioncap_source
from tango_dranspose.sources.simulator import Simulator
from tango_dranspose.sources.tcp import TcpUpstream
from tango_dranspose.sources.upstream import UpstreamClosed, UpstreamError, open_upstream
from tango_dranspose.streams.base import Kind
from tango_dranspose.streams.positioncap import (
    HANDSHAKE_REPLY,
    PositionCapFramer,
    PositioncapParser,
    PositionCapStart,
    PositionCapValues,
    build_arm,
    rotation_rows,
)

from .util import expect_pending, free_port, run


async def read_until_end(upstream: TcpUpstream, ends: int = 1, timeout: float = 5.0) -> bytes:
    """Everything the upstream delivers up to and including the ``ends``-th END line."""

    async def collect() -> bytes:
        data = b""
        while data.count(b"END ") < ends or not data.endswith(b"\n"):
            (chunk,) = await upstream.receive()
            data += chunk
        return data

    return await asyncio.wait_for(collect(), timeout)


def without_times(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if not line.endswith(b"Z")]


def test_synthetic_position_capture_arrives_byte_for_byte_after_the_handshake() -> None:
    rows = 11

    async def scenario() -> tuple[bytes, bytes]:
        source = positioncap_source(rows)
        sim = Simulator(source)  # PCAP_RAW: tcp by default
        assert sim.transport == "tcp"
        await sim.start()
        sending = asyncio.create_task(sim.run())
        await expect_pending(sending, 0.1)  # nothing goes out before a client
        upstream = open_upstream(sim.url)
        assert isinstance(upstream, TcpUpstream)
        await upstream.open()
        data = await read_until_end(upstream)
        await upstream.close()  # the client hangs up first, as an ingester does at scan end
        stats = await asyncio.wait_for(sending, 5)
        assert stats.messages == rows + 2
        assert upstream.stats.errors == 0 and upstream.stats.bytes == len(data)
        return data, b"".join(b"".join(m) for m in source.messages())

    data, sent = run(scenario())
    assert data.startswith(HANDSHAKE_REPLY + b"arm_time: ")
    assert without_times(data) == without_times(HANDSHAKE_REPLY + sent)  # now, at every arm
    framer, parser = PositionCapFramer(), PositioncapParser()
    events = framer.feed([data])
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * rows + [Kind.END]
    assert isinstance(parser.parse(events[0].data), PositionCapStart)
    values = [parser.parse(e.data) for e in events[1:-1]]
    assert all(isinstance(v, PositionCapValues) for v in values)
    assert values[-1]["INENC2.VAL.Mean"] == pytest.approx(180.0)
    # The generator sends what the protocol module builds for the same rows.
    assert without_times(sent) == without_times(build_arm(rotation_rows(rows)))


def test_danmax_dump_is_served_as_its_byte_stream(captures: Path) -> None:
    (path,) = (captures / "danmax-tomo").glob("dumppcap_rot*.cbors")
    expected = b"".join(f for rec in read_dump(path) for f in rec.streams["pcap_rot"].frames)

    async def scenario() -> bytes:
        sim = Simulator(capture_source(path))
        assert sim.transport == "tcp"
        await sim.start()
        sending = asyncio.create_task(sim.run())
        upstream = open_upstream(sim.url)
        await upstream.open()
        assert isinstance(upstream, TcpUpstream)
        data = await read_until_end(upstream)
        await upstream.close()
        await asyncio.wait_for(sending, 5)
        return data

    data = run(scenario())
    assert data == HANDSHAKE_REPLY + expected
    events = PositionCapFramer().feed([data])
    assert len(events) == 13 and events[-1].kind is Kind.END


def test_repeat_sends_several_arms_on_one_connection() -> None:
    async def scenario() -> bytes:
        sim = Simulator(positioncap_source(3), repeat=3, interval=0.001)
        await sim.start()
        sending = asyncio.create_task(sim.run())
        upstream = open_upstream(sim.url)
        assert isinstance(upstream, TcpUpstream)
        await upstream.open()
        data = await read_until_end(upstream, ends=3)
        await upstream.close()
        stats = await asyncio.wait_for(sending, 5)
        assert stats.sequences == 3 and stats.messages == 15
        return data

    events = PositionCapFramer(multi_arm=True).feed([run(scenario())])
    assert [e.kind for e in events].count(Kind.START) == 3 and len(events) == 15


def test_the_simulator_waits_for_the_handshake_line_before_streaming() -> None:
    async def scenario() -> None:
        sim = Simulator(positioncap_source(2))
        await sim.start()
        sending = asyncio.create_task(sim.run())
        host, port = sim.url.removeprefix("tcp://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        early = asyncio.ensure_future(reader.read(1))
        await expect_pending(early, 0.2)
        early.cancel()
        writer.write(b"\n")
        assert await asyncio.wait_for(reader.readexactly(3), 2) == b"OK\n"
        assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"arm_time:")
        writer.close()
        await asyncio.wait_for(sending, 5)

    run(scenario())


def test_connection_refused_is_a_clear_error_and_a_counter() -> None:
    async def scenario() -> None:
        upstream = open_upstream(f"tcp://127.0.0.1:{free_port()}?connect_timeout=0.2")
        with pytest.raises(UpstreamError, match=r"cannot connect: .*refused.*tried for 0\.2 s"):
            await upstream.open()
        assert upstream.stats.errors == 1 and "refused" in (upstream.stats.last_error or "")
        assert not upstream.stats.connected
        with pytest.raises(UpstreamClosed):
            await upstream.receive()
        await upstream.close()

    run(scenario())


def test_open_retries_until_the_panda_listens() -> None:
    async def scenario() -> None:
        port = free_port()
        upstream = open_upstream(f"tcp://127.0.0.1:{port}", connect_timeout=5)
        opening = asyncio.create_task(upstream.open())
        await expect_pending(opening, 0.1)
        sim = Simulator(positioncap_source(1), address=f"tcp://127.0.0.1:{port}")
        await sim.start()
        sending = asyncio.create_task(sim.run())
        await asyncio.wait_for(opening, 5)
        assert isinstance(upstream, TcpUpstream)
        await read_until_end(upstream)
        await upstream.close()
        await asyncio.wait_for(sending, 5)
        assert upstream.stats.errors == 0

    run(scenario())


def test_peer_closing_ends_receive_with_a_counted_error() -> None:
    async def scenario() -> None:
        sim = Simulator(positioncap_source(2), linger=0)
        await sim.start()
        sending = asyncio.create_task(sim.run())
        upstream = open_upstream(sim.url)
        await upstream.open()
        assert isinstance(upstream, TcpUpstream)
        await read_until_end(upstream)
        await asyncio.wait_for(sending, 5)  # linger 0: the simulator hangs up at once
        with pytest.raises(UpstreamClosed, match="the peer closed the connection"):
            await asyncio.wait_for(upstream.receive(), 2)
        assert upstream.stats.errors == 1 and not upstream.stats.connected
        await upstream.close()

    run(scenario())


def test_close_wakes_a_waiting_receive_without_an_error() -> None:
    async def scenario() -> None:
        sim = Simulator(positioncap_source(1), delay=30)
        await sim.start()
        sending = asyncio.create_task(sim.run())
        upstream = open_upstream(sim.url)
        await upstream.open()
        (ok,) = await asyncio.wait_for(upstream.receive(), 2)
        assert ok == HANDSHAKE_REPLY
        waiting = asyncio.create_task(upstream.receive())
        await expect_pending(waiting, 0.05)
        await upstream.close()
        with pytest.raises(UpstreamClosed, match="was closed"):
            await asyncio.wait_for(waiting, 2)
        assert upstream.stats.errors == 0
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)

    run(scenario())
