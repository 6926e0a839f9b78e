"""file:// playback upstream and the message sources behind it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tango_dranspose.core.capture import CaptureError, DumpWriter, write_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.sources.fileplay import FileUpstream
from tango_dranspose.sources.messages import capture_source, stins_source
from tango_dranspose.sources.upstream import UpstreamClosed, UpstreamError, open_upstream

from .util import run


@pytest.fixture
def raw_scan(tmp_path: Path) -> tuple[Path, list[list[bytes]]]:
    messages = list(stins_source(5, (8, 8)).messages())
    path = tmp_path / "stins.cbors"
    write_raw_capture(path, messages)
    return path, messages


def test_file_upstream_plays_a_raw_capture_repeatedly_then_closes(
    raw_scan: tuple[Path, list[list[bytes]]],
) -> None:
    path, messages = raw_scan

    async def scenario() -> list[list[bytes]]:
        upstream = open_upstream(f"file://{path}?repeat=2")
        assert isinstance(upstream, FileUpstream)
        got = []
        async with upstream:
            assert upstream.stats.connected
            async for message in upstream:  # ends at UpstreamClosed
                got.append(message)
        assert upstream.stats.messages == 14 and not upstream.stats.connected
        with pytest.raises(UpstreamClosed):
            await upstream.receive()
        return got

    assert run(scenario()) == messages * 2


def test_file_upstream_paces_messages(raw_scan: tuple[Path, list[list[bytes]]]) -> None:
    path, messages = raw_scan

    async def scenario() -> float:
        upstream = open_upstream(f"file://{path}?interval=0.02")
        await upstream.open()
        began = time.monotonic()
        for _ in messages:
            await upstream.receive()
        return time.monotonic() - began

    assert run(scenario()) >= 0.02 * (len(messages) - 1) * 0.9


def test_file_upstream_serves_one_stream_of_a_dump(tmp_path: Path) -> None:
    path = tmp_path / "dump.cbors"
    with DumpWriter(path) as dump:
        for i in range(3):
            dump.write(
                i, {"a": StreamData("STINS", [b"a%d" % i]), "b": StreamData("PCAP", [b"b", b"c"])}
            )

    async def scenario() -> None:
        with pytest.raises(UpstreamError, match="holds the streams a, b; choose one"):
            await open_upstream(f"file://{path}").open()
        with pytest.raises(UpstreamError, match="has no stream 'c'"):
            await open_upstream(f"file://{path}?stream=c").open()
        upstream = open_upstream(f"file://{path}?stream=b")
        await upstream.open()
        assert [await upstream.receive() for _ in range(3)] == [[b"b", b"c"]] * 3
        with pytest.raises(UpstreamClosed, match="end of the file"):
            await upstream.receive()

    run(scenario())
    assert capture_source(path, "a").typ == "STINS"


def test_file_upstream_reports_a_missing_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        upstream = open_upstream(f"file://{tmp_path}/nope.cbors")
        with pytest.raises(UpstreamError, match="no such capture file"):
            await upstream.open()
        assert upstream.stats.errors == 1

    run(scenario())


def test_a_truncated_capture_plays_its_complete_records(
    raw_scan: tuple[Path, list[list[bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    path, messages = raw_scan
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    source = capture_source(path)
    assert list(source.messages()) == messages[:-1]
    assert "truncated after 6 complete records" in caplog.text


def test_capture_sources_detect_the_protocol(captures: Path) -> None:
    assert capture_source(captures / "pcap-zmq.cbors").typ == "PCAP"
    assert capture_source(captures / "xspress3-dump.cbors").typ == "xspress"
    assert capture_source(captures / "dump_xrd.cbors").typ == "STINS"
    with pytest.raises(CaptureError, match="raw capture of one upstream"):
        capture_source(captures / "pcap-zmq.cbors", "x")


def test_interval_stops_at_close(raw_scan: tuple[Path, list[list[bytes]]]) -> None:
    path, _ = raw_scan

    async def scenario() -> None:
        upstream = open_upstream(f"file://{path}?interval=0.05")
        await upstream.open()
        await upstream.receive()
        waiting = asyncio.create_task(upstream.receive())
        await upstream.close()
        with pytest.raises(UpstreamClosed):
            await asyncio.wait_for(waiting, 2)

    run(scenario())
