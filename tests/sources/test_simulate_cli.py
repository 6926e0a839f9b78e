"""The simulate command as a real process: its listening line, its data, its exits."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from tango_dranspose.sources.http_upstream import HttpUpstream
from tango_dranspose.sources.simulate_cli import main
from tango_dranspose.sources.upstream import open_upstream
from tango_dranspose.streams.pcap import PCAPFramer
from tango_dranspose.streams.stream1 import Stream1Data, Stream1Framer, parse

from .util import receive_n, run

REPO = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "tango_dranspose.sources.simulate_cli"]


async def start(
    *args: str, expect: str = "listening tcp://127.0.0.1:"
) -> tuple[asyncio.subprocess.Process, str]:
    """Start the simulator and return it with the URL of its first line (``listening URL``)."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
    assert line.startswith(expect), line
    return proc, line.split()[1]


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_simulate_serves_a_synthetic_stins_scan_to_a_pull_socket() -> None:
    frames = 6

    async def scenario() -> None:
        proc, url = await start("stins", "-n", str(frames), "--shape", "24x40", "--dtype", "uint32")
        async with open_upstream(f"pull+{url}") as upstream:
            got = await receive_n(upstream, frames + 2)
        code, out, err = await finish(proc)
        assert code == 0, err
        assert f"done messages={frames + 2} " in out
        framer = Stream1Framer()
        events = [e for m in got for e in framer.feed(m)]
        assert len(events) == frames + 2 and framer.drops.total == 0
        images = [parse(e.data) for e in events[1:-1]]
        assert all(isinstance(i, Stream1Data) for i in images)
        first = images[0]
        assert isinstance(first, Stream1Data) and first.data is not None
        assert first.data.shape == (24, 40) and first.data.dtype == np.uint32

    run(scenario(), timeout=30)


def test_simulate_publishes_pcap_and_waits_for_the_subscriber() -> None:
    async def scenario() -> None:
        proc, url = await start("pcap", "-n", "40", "--rows-per-message", "8", "-i", "0.001")
        async with open_upstream(f"sub+{url}") as upstream:
            got = await receive_n(upstream, 5 + 2)
        code, _, err = await finish(proc)
        assert code == 0, err
        framer = PCAPFramer()
        assert len([e for m in got for e in framer.feed(m)]) == 42 and framer.drops.total == 0

    run(scenario(), timeout=30)


def test_simulate_serves_position_capture_over_tcp_and_posts_sardana_over_http() -> None:
    async def scenario() -> None:
        proc, url = await start("positioncap", "-n", "4")
        assert url.startswith("tcp://")
        async with open_upstream(url) as upstream:
            data = b""
            while not data.endswith(b"Disarmed\n"):
                data += (await asyncio.wait_for(upstream.receive(), 5))[0]
        assert data.startswith(b"OK\narm_time:") and data.count(b"\n 64806368 ") == 4
        code, _, err = await finish(proc)
        assert code == 0, err

        async with open_upstream("http://127.0.0.1:0") as server:
            assert isinstance(server, HttpUpstream)
            proc, url = await start(
                "sardana", "-n", "2", "--post-to", server.bound_url, expect="posting http://"
            )
            got = await receive_n(server, 4)
        code, _, err = await finish(proc)
        assert code == 0, err
        assert [json.loads(m[0])["type"] for m in got] == [
            "DataDescription",
            "RecordData",
            "RecordData",
            "RecordEnd",
        ]

    run(scenario(), timeout=30)


def test_simulate_exits_cleanly_on_sigterm_and_sigint() -> None:
    async def scenario(sig: signal.Signals) -> None:
        proc, _ = await start("stins", "-n", "3")  # nobody connects: it waits
        proc.send_signal(sig)
        code, out, err = await finish(proc)
        assert code == 128 + sig.value
        assert f"stopped by {sig.name} after 0 messages" in err
        assert "Traceback" not in err and "done" not in out

    run(scenario(signal.SIGTERM), timeout=30)
    run(scenario(signal.SIGINT), timeout=30)


def test_simulate_reports_bad_input_with_status_2(tmp_path: Path) -> None:
    missing = subprocess.run(
        [*COMMAND, str(tmp_path / "none.cbors")], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 2
    assert "error:" in missing.stderr and "no such capture file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_simulate_needs_a_target_for_http() -> None:
    assert main(["sardana"]) == 2
    assert main(["stins", "--transport", "http"]) == 2


def test_simulate_help_names_every_option() -> None:
    result = subprocess.run([*COMMAND, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in (
        "--transport",
        "--bind",
        "--post-to",
        "--connect-timeout",
        "--hwm",
        "--stream",
        "--count",
        "--shape",
        "--dtype",
        "--compression",
        "--rows-per-message",
        "--interval",
        "--repeat",
        "--delay",
        "--wait-for-peer",
        "--warmup",
        "--linger",
        "listening URL",
        "128+N",
    ):
        assert option in result.stdout, option


def test_per_connection_gives_each_reader_a_whole_sequence() -> None:
    frames = 4

    async def scenario() -> None:
        proc, url = await start(
            "stins", "-n", str(frames), "--shape", "4x4", "--repeat", "2", "--per-connection"
        )
        for _ in range(2):  # two scans, each connecting anew, as an ingester does
            async with open_upstream(f"pull+{url}") as upstream:
                got = await receive_n(upstream, frames + 2)
            framer = Stream1Framer()
            events = [e for m in got for e in framer.feed(m)]
            # Each starts with its own header: nothing of the other sequence, nothing dropped.
            assert len(events) == frames + 2 and framer.drops.total == 0
        code, out, err = await finish(proc)
        assert code == 0, err
        assert f"done messages={2 * (frames + 2)} " in out

    run(scenario(), timeout=30)
