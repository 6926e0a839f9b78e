"""Sardana recorder posts: the simulator's HTTP client -> the http:// upstream server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tango_dranspose.core.events import StreamData
from tango_dranspose.sources.http_upstream import HttpUpstream
from tango_dranspose.sources.httpwire import read_message
from tango_dranspose.sources.messages import capture_source, sardana_source
from tango_dranspose.sources.sim_transports import SimulatorError
from tango_dranspose.sources.simulator import Simulator
from tango_dranspose.sources.upstream import UpstreamClosed, UpstreamError, open_upstream
from tango_dranspose.streams.base import Kind
from tango_dranspose.streams.sardana import (
    SardanaDataDescription,
    SardanaFramer,
    SardanaRecordData,
    SardanaRecordEnd,
    parse,
)

from .util import expect_pending, free_port, http_exchange, receive_n, run


def post(path: str, body: bytes, *, extra: str = "", method: str = "POST") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def http_upstream(**options: int) -> HttpUpstream:
    upstream = open_upstream("http://127.0.0.1:0", **options)  # type: ignore[arg-type]
    assert isinstance(upstream, HttpUpstream)
    await upstream.open()
    assert upstream.port != 0  # the bound port, readable
    return upstream


def test_simulator_posts_a_sardana_scan_with_the_right_types() -> None:
    points = 7

    async def scenario() -> list[list[bytes]]:
        upstream = await http_upstream()
        sim = Simulator(sardana_source(points), address=upstream.bound_url)
        assert sim.transport == "http"
        sending = asyncio.create_task(sim.run())
        got = await receive_n(upstream, points + 2)
        stats = await asyncio.wait_for(sending, 5)
        await upstream.close()
        assert stats.messages == points + 2 and stats.rejected == 0
        assert upstream.stats.messages == points + 2 and upstream.stats.rejected == 0
        assert upstream.stats.connections == 1  # one kept-alive connection for all posts
        return got

    got = run(scenario())
    packets = [parse(StreamData("sardana", m)) for m in got]
    assert isinstance(packets[0], SardanaDataDescription)
    assert all(isinstance(p, SardanaRecordData) for p in packets[1:-1])
    assert isinstance(packets[-1], SardanaRecordEnd)
    record = packets[-2]
    assert isinstance(record, SardanaRecordData) and record.point_nb == points - 1
    assert record["tom_ry"] == pytest.approx(180.0)
    framer = SardanaFramer()
    kinds = [e.kind for m in got for e in framer.feed(m)]
    assert kinds == [Kind.START] + [Kind.DATA] * points + [Kind.END]


def test_danmax_sardana_dump_is_posted_unchanged(captures: Path) -> None:
    (path,) = (captures / "danmax-tomo").glob("dumpsardana*.cbors")
    source = capture_source(path)

    async def scenario() -> list[list[bytes]]:
        upstream = await http_upstream()
        sending = asyncio.create_task(Simulator(source, address=upstream.bound_url).run())
        got = await receive_n(upstream, 13)
        await asyncio.wait_for(sending, 5)
        await upstream.close()
        return got

    assert run(scenario()) == list(source.messages())


def test_a_post_without_type_gets_the_endpoints_type() -> None:
    async def scenario() -> list[dict[str, object]]:
        upstream = await http_upstream()
        out = []
        for path in ("/v1/data_desc", "/v1/record_data", "/v1/record_end", "/v1/custom_data"):
            answer = await http_exchange(upstream.port, post(path, b'{"x": 1}'))
            assert answer.start[0] == "200"
            (body,) = await asyncio.wait_for(upstream.receive(), 2)
            out.append(json.loads(body))
        await upstream.close()
        return out

    types = [obj["type"] for obj in run(scenario())]
    assert types == ["DataDescription", "RecordData", "RecordEnd", "custom_data"]


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (post("/v1/data_desc", b"", method="GET"), "405", "GET /v1/data_desc: only POST"),
        (post("/v2/other", b"{}"), "404", "no endpoint /v2/other; the recorder posts to"),
        (post("/v1/record_data", b"{not json"), "400", "body is not JSON"),
        (post("/v1/record_data", b"[1, 2]"), "400", "body must be a JSON object, got list"),
        (b"HELLO\r\n\r\n", "400", "not an HTTP/1.x request line"),
        (post("/v1/record_data", b"{}", extra="Content-Length: 5\r\n"), "400", "'2, 5' is not"),
        (
            b"POST /v1/record_data HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "413",
            "larger than the limit",
        ),
    ],
)
def test_bad_requests_get_a_readable_status(raw: bytes, status: str, reason: str) -> None:
    async def scenario() -> None:
        upstream = await http_upstream()
        upstream.max_body = 1 << 20
        answer = await http_exchange(upstream.port, raw)
        assert answer.start[0] == status
        assert reason in json.loads(answer.body)["error"]
        if status == "405":
            assert answer.headers["allow"] == "POST"
        assert upstream.stats.rejected == 1 and upstream.stats.errors == 1
        assert status in (upstream.stats.last_error or "")
        assert upstream.stats.messages == 0
        await upstream.close()

    run(scenario())


def test_keep_alive_chunked_and_expect_continue() -> None:
    async def scenario() -> None:
        upstream = await http_upstream()
        reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
        body = b'{"type": "RecordData", "point_nb": 0, "timestamp": 0.0}'
        chunked = (
            b"POST /v1/record_data HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(body) - 10:x}\r\n".encode()
            + body[:-10]
            + b"\r\n"
            + f"{10:x}\r\n".encode()
            + body[-10:]
            + b"\r\n0\r\n\r\n"
        )
        writer.write(chunked + post("/v1/record_end", b"{}"))

        async def answer() -> str:
            message = await asyncio.wait_for(read_message(reader, max_body=999, request=False), 2)
            assert message is not None
            return message.start[0]

        assert [await answer(), await answer()] == ["200", "200"]
        assert await receive_n(upstream, 2) == [[body], [b'{"type": "RecordEnd"}']]
        expect = post("/v1/custom_data", b"{}", extra="Expect: 100-continue\r\n")
        head, payload = expect.split(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        assert await answer() == "100"  # only now does the client send the body
        writer.write(payload)
        assert await answer() == "200"
        (custom,) = await asyncio.wait_for(upstream.receive(), 2)
        assert json.loads(custom)["type"] == "custom_data"
        writer.close()
        await upstream.close()
        assert upstream.stats.connections == 1 and upstream.stats.rejected == 0

    run(scenario())


def test_a_full_queue_holds_the_recorder_back_until_the_ingester_reads() -> None:
    async def scenario() -> None:
        upstream = await http_upstream(queue=1)
        sim = Simulator(sardana_source(3), address=upstream.bound_url)
        sending = asyncio.create_task(sim.run())
        await expect_pending(sending, 0.3)
        assert sim.stats.messages == 1  # one post queued, the second waits for its answer
        got = await receive_n(upstream, 5)
        await asyncio.wait_for(sending, 5)
        assert [json.loads(m[0])["type"] for m in got][::4] == ["DataDescription", "RecordEnd"]
        await upstream.close()

    run(scenario())


def test_closing_answers_waiting_posts_and_wakes_receive() -> None:
    async def scenario() -> None:
        upstream = await http_upstream(queue=1)
        first = await http_exchange(upstream.port, post("/v1/record_data", b"{}"))
        assert first.start[0] == "200"
        waiting_post = asyncio.create_task(
            http_exchange(upstream.port, post("/v1/record_data", b"{}"))
        )
        await expect_pending(waiting_post, 0.2)
        await upstream.close()
        answer = await asyncio.wait_for(waiting_post, 2)
        assert answer.start[0] == "503" and "scan ended" in json.loads(answer.body)["error"]
        assert upstream.stats.dropped == 1  # the first post, accepted but never read
        with pytest.raises(UpstreamClosed):
            await asyncio.wait_for(upstream.receive(), 2)
        with pytest.raises(UpstreamClosed):
            await asyncio.wait_for(upstream.receive(), 2)
        await upstream.close()  # idempotent
        assert not upstream.stats.connected

    run(scenario())


def test_a_busy_port_and_an_absent_server_are_clear_errors() -> None:
    async def scenario() -> None:
        first = await http_upstream()
        second = open_upstream(first.bound_url)
        with pytest.raises(UpstreamError, match=r"cannot listen on .*Address already in use"):
            await second.open()
        await first.close()
        sim = Simulator(
            sardana_source(1), address=f"http://127.0.0.1:{free_port()}", connect_timeout=0.2
        )
        with pytest.raises(SimulatorError, match=r"cannot connect to .*Connection refused"):
            await sim.run()

    run(scenario())


def test_rearming_binds_the_same_port_again() -> None:
    async def scenario() -> None:
        upstream = await http_upstream()
        port = upstream.port
        await upstream.close()
        await upstream.open()
        assert upstream.port == port and upstream.stats.connected
        answer = await http_exchange(port, post("/v1/record_end", b"{}"))
        assert answer.start[0] == "200"
        assert await asyncio.wait_for(upstream.receive(), 2) == [b'{"type": "RecordEnd"}']
        await upstream.close()

    run(scenario())
