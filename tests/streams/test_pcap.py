from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tango_dranspose.compat.data.pcap import PCAPData, PCAPEnd, PCAPPacket, PCAPStart
from tango_dranspose.compat.middlewares.pcap import parse as compat_parse
from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.pcap import (
    PROTOCOL,
    PCAPFramer,
    build_data,
    build_end,
    build_scan,
    build_start,
    parse,
    rotation_rows,
    split_rows,
)


def run(messages: Iterable[list[Any]]) -> tuple[list[Framed], PCAPFramer]:
    framer = PCAPFramer()
    events = [event for message in messages for event in framer.feed(message)]
    return events, framer


def test_registry_entry() -> None:
    assert PROTOCOL.typ == "PCAP"
    assert PROTOCOL.framer is PCAPFramer
    assert PROTOCOL.parse is parse
    assert compat_parse is parse


def test_real_capture_gives_one_event_per_row(captures: Path) -> None:
    messages = list(read_raw_capture(captures / "pcap-zmq.cbors"))
    assert PCAPFramer.detect(messages[0])
    events, framer = run(messages)
    assert framer.drops.total == 0
    assert [e.kind for e in events[:2]] == [Kind.START, Kind.DATA]
    assert events[-1].kind is Kind.END
    rows = [parse(e.data) for e in events if e.kind is Kind.DATA]
    assert len(rows) == 1500
    assert all(isinstance(row, PCAPData) for row in rows)
    assert [row.frame_number for row in rows] == list(range(1500))
    first, last = rows[0], rows[-1]
    assert isinstance(first, PCAPData) and isinstance(last, PCAPData)
    assert first.energy == 8879.101048716273
    assert last.energy == 9178.90056771702
    assert first.triggernumber == 1.0 and last.triggernumber == 1500.0
    assert first["INENC3.VAL.Mean"] == 0.0
    assert set(first.values) == {
        "inttime",
        "triggernumber",
        "repeatindex",
        "energy",
        "INENC3.VAL.Mean",
    }
    start, end = parse(events[0].data), parse(events[-1].data)
    assert isinstance(start, PCAPStart) and start.arm_time.year == 2024
    assert isinstance(end, PCAPEnd) and end.message_id == 102
    # start and end are forwarded as received
    assert events[0].data.frames == messages[0]
    assert events[-1].data.frames == messages[-1]


def test_synthetic_scan_unvectorised() -> None:
    columns = rotation_rows(40)
    events, framer = run(build_scan(columns, rows_per_message=15))
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 40 + [Kind.END]
    rows = [parse(e.data) for e in events[1:-1]]
    assert [r.frame_number for r in rows] == list(range(40))
    assert [r["INENC2.VAL.Mean"] for r in rows] == columns["INENC2.VAL.Mean"]
    assert rows[0]["INENC2.VAL.Mean"] == 0.0 and rows[-1]["INENC2.VAL.Mean"] == 180.0
    # scalars of the upstream message are copied into every row
    assert {r.message_id for r in rows[:15]} == {2}
    assert {r.message_id for r in rows[15:30]} == {3}


def test_scalar_only_data_message_is_one_row() -> None:
    events, _ = run(
        [
            build_start(),
            [b'{"message_id":2,"version":1,"message_type":"data","frame_number":7,"x":1.5}'],
        ]
    )
    assert len(events) == 2
    row = parse(events[1].data)
    assert isinstance(row, PCAPData) and row.frame_number == 7 and row.x == 1.5


def test_unequal_vectors_dropped_with_reason() -> None:
    bad = build_data(0, {"a": [1, 2, 3], "b": [1, 2]})
    empty = build_data(0, {"a": [], "b": []})
    events, framer = run([build_start(), bad, empty, build_data(0, {"a": [1], "b": [2]}, 3)])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA]
    assert framer.drops.counts == {
        "vector fields of unequal length": 1,
        "data message without rows": 1,
    }
    assert "a: 3, b: 2" in framer.drops.samples["vector fields of unequal length"]
    with pytest.raises(ParseError, match="unequal lengths"):
        split_rows(json.loads(bad[0]))


def test_malformed_messages_dropped_never_raise() -> None:
    events, framer = run(
        [
            [b"{not json"],
            [b"[1, 2]"],
            [b'{"message_id":1,"version":1,"message_type":"bogus"}'],
            [b'{"message_id":1,"version":1,"message_type":"data"}'],
            [b"a", b"b"],
        ]
    )
    assert events == []
    assert framer.drops.counts == {"malformed message": 4, "not a single-frame message": 1}
    assert "not valid JSON" in framer.drops.samples["malformed message"]


def test_parse_errors_are_clear() -> None:
    with pytest.raises(ParseError, match="not valid JSON"):
        parse(StreamData("PCAP", [b"{oops"]))
    with pytest.raises(ParseError, match="frame_number"):
        parse(StreamData("PCAP", [b'{"message_id":2,"version":1,"message_type":"data"}']))
    with pytest.raises(ParseError, match="message_type must be one of"):
        parse(StreamData("PCAP", [b'{"message_id":2,"version":1}']))
    with pytest.raises(ParseError, match="expected stream data of type PCAP"):
        parse(StreamData("STINS", build_start()))


def test_scan_window() -> None:
    events, framer = run(
        [
            build_data(0, {"a": [1, 2]}),
            build_start(),
            build_data(0, {"a": [1, 2]}),
            build_end(3),
            build_data(2, {"a": [3]}),
        ]
    )
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert framer.drops.counts == {"before the start message": 1, "after the end message": 1}


def test_union_adapter_as_in_dranspose() -> None:
    packet = PCAPPacket.validate_python(json.loads(build_end(9)[0]))
    assert isinstance(packet, PCAPEnd)
    start = PCAPPacket.validate_json(build_start(arm_time="2024-10-07T08:49:10.627Z")[0])
    assert isinstance(start, PCAPStart) and start.arm_time.microsecond == 627000
