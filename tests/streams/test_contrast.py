from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tango_dranspose.compat.data.contrast import (
    ContrastFinished,
    ContrastHeartbeat,
    ContrastPacket,
    ContrastRunning,
    ContrastStarted,
)
from tango_dranspose.compat.middlewares.contrast import parse as compat_parse
from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.safepickle import restricted_loads
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.contrast import (
    PROTOCOL,
    ContrastFramer,
    RefusedPickle,
    build_finished,
    build_heartbeat,
    build_running,
    build_started,
    parse,
)

PATH = "/data/staff/nanomax/raw/dummy"
DESCRIPTION = "mesh sx -2 2 3 sy -2 2 4 0.1"


def run(messages: Iterable[list[Any]]) -> tuple[list[Framed], ContrastFramer]:
    framer = ContrastFramer()
    return [e for m in messages for e in framer.feed(m)], framer


def os_system_pickle(tmp_path: Path) -> bytes:
    # Protocol 0 by hand: GLOBAL os.system, called with one string argument.
    return f"cos\nsystem\n(V touch {tmp_path / 'pwned'}\ntR.".encode()


def synthetic() -> list[list[bytes]]:
    snapshot = {"sx": 1.9986, "sy": 1.9997, "energy": 12000.0}
    points = [
        build_running(
            0.1 * i,
            {
                "sx": -2.0 + i,
                "sy": -2.0,
                "panda0": {"INENC2.VAL_Mean": np.array([-2.0 + i])},
                "xspress3": {"type": "Link", "filename": "f.h5", "path": "/e", "universal": True},
            },
        )
        for i in range(3)
    ]
    return [
        build_heartbeat(),
        build_started(2, PATH, DESCRIPTION, snapshot),
        *points[:2],
        build_heartbeat(),
        points[2],
        build_finished(2, PATH, DESCRIPTION, snapshot),
        build_heartbeat(),
    ]


def test_protocol_entry() -> None:
    assert PROTOCOL.typ == "contrast" and PROTOCOL.framer is ContrastFramer
    assert compat_parse is parse


def test_real_capture(captures: Path) -> None:
    messages = list(read_raw_capture(captures / "contrast-dump.cbors"))
    assert len(messages) == 26
    events, framer = run(messages)
    assert framer.drops.total == 0
    assert framer.heartbeats == 4  # skipped, not counted as drops
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 20 + [Kind.END]
    parsed = [parse(e.data) for e in events]
    start, end = parsed[0], parsed[-1]
    assert isinstance(start, ContrastStarted)
    assert start.scannr == 2 and start.description == DESCRIPTION
    assert start.snapshot["energy"] == 12000.002585815417
    running = [p for p in parsed if isinstance(p, ContrastRunning)]
    assert len(running) == 20
    first = running[0]
    assert first.dt == 2.410903215408325
    assert first.sx == -2.000431059888797  # detector and motor entries are attributes
    assert isinstance(first.panda0["INENC2.VAL_Mean"], np.ndarray)
    assert first.panda0["INENC2.VAL_Mean"][0] == pytest.approx(-2.00405186)
    assert first.xspress3["type"] == "Link"
    assert set(first.entries) == {"sx", "sy", "pseudo", "panda0", "xspress3"}
    assert isinstance(end, ContrastFinished) and end.status == "finished" and end.scannr == 2
    heartbeat = parse(StreamData("contrast", messages[0]))
    assert isinstance(heartbeat, ContrastHeartbeat)


def test_synthetic_stream() -> None:
    events, framer = run(synthetic())
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 3 + [Kind.END]
    assert framer.heartbeats == 3 and framer.drops.total == 0
    point = parse(events[2].data)
    assert isinstance(point, ContrastRunning)
    assert point.sx == -1.0 and point.panda0["INENC2.VAL_Mean"].tolist() == [-1.0]
    assert type(restricted_loads(events[1].data.frames[0])) is OrderedDict  # as Contrast sends it


def test_interrupted_scan_ends_the_stream() -> None:
    events, _ = run(
        [
            build_started(3, PATH, "ascan"),
            build_running(0.1, {"sx": 0.0}),
            build_finished(3, PATH, "ascan", status="interrupted"),
        ]
    )
    assert events[-1].kind is Kind.END
    end = parse(events[-1].data)
    assert isinstance(end, ContrastFinished) and end.status == "interrupted"


def test_code_in_pickle_is_refused(tmp_path: Path) -> None:
    evil = os_system_pickle(tmp_path)
    with pytest.raises(RefusedPickle, match=r"refusing to load os\.system"):
        parse(StreamData("contrast", [evil]))
    events, framer = run([build_started(2, PATH, "x"), [evil], build_running(0.1, {})])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA]
    assert framer.drops.counts == {"pickle refused: not plain data": 1}
    assert "os.system" in framer.drops.samples["pickle refused: not plain data"]
    assert not (tmp_path / "pwned").exists()
    assert isinstance(RefusedPickle("x"), ParseError)


def test_bad_input_counted() -> None:
    started = build_started(2, PATH, "x")
    events, framer = run(
        [
            build_running(0.1, {}),  # before the start
            started,
            [b"not a pickle"],
            [started[0][:20]],  # truncated
            [pickle.dumps([1, 2], protocol=2)],
            [pickle.dumps({"status": "paused"}, protocol=2)],
            [pickle.dumps({"status": "running"}, protocol=2)],  # no dt
            [pickle.dumps({1: "a", "status": "running", "dt": 0.1}, protocol=2)],
            build_finished(2, PATH, "x"),
            build_running(0.1, {}),  # after the end
        ]
    )
    assert [e.kind for e in events] == [Kind.START, Kind.END]
    assert framer.drops.counts == {
        "before the start message": 1,
        "malformed message": 6,
        "after the end message": 1,
    }


def test_parse_errors_are_clear() -> None:
    with pytest.raises(ParseError, match="not a valid pickle"):
        parse(StreamData("contrast", [b"garbage"]))
    with pytest.raises(ParseError, match="must be a pickled dict, got list"):
        parse(StreamData("contrast", [pickle.dumps([1])]))
    with pytest.raises(ParseError, match="status must be one of"):
        parse(StreamData("contrast", [pickle.dumps({"status": "paused"})]))
    with pytest.raises(ParseError, match="dt"):
        parse(StreamData("contrast", [pickle.dumps({"status": "running"})]))
    with pytest.raises(ParseError, match="expected stream data of type contrast"):
        parse(StreamData("STINS", build_heartbeat()))


def test_union_adapter_as_in_dranspose() -> None:
    packet = ContrastPacket.validate_python({"status": "running", "dt": 1.0, "sx": 2.0})
    assert isinstance(packet, ContrastRunning) and packet.sx == 2.0


class ZeroCopyFrame:
    """What a zmq.Frame offers, without zmq."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def bytes(self) -> bytes:
        return self._data

    @property
    def buffer(self) -> memoryview:
        return memoryview(self._data)


def test_zero_copy_frames_forwarded_as_is() -> None:
    frames = [ZeroCopyFrame(m[0]) for m in synthetic()]
    events, framer = run([[f] for f in frames])
    assert len(events) == 5 and framer.drops.total == 0
    assert events[1].data.frames[0] is frames[2]  # not copied
    assert isinstance(parse(events[1].data), ContrastRunning)
