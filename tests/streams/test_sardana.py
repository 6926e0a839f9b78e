from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tango_dranspose.compat.data.sardana import (
    SardanaDataDescription,
    SardanaPacket,
    SardanaRecordData,
    SardanaRecordEnd,
)
from tango_dranspose.compat.middlewares.sardana import parse as compat_parse
from tango_dranspose.core.capture import read_dump
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.sardana import (
    PROTOCOL,
    SardanaFramer,
    build_custom_data,
    build_data_description,
    build_record_data,
    build_record_end,
    parse,
)

HOST = "tango://b-v-danmax-csdb-0.maxiv.lu.se:10000"
ORCA = f"{HOST}/expchan/orca_ctrl/1"
PCAP_ROT = f"{HOST}/expchan/pcap_ctrl/11"


def run(messages: Iterable[list[Any]]) -> tuple[list[Framed], SardanaFramer]:
    framer = SardanaFramer()
    return [e for m in messages for e in framer.feed(m)], framer


def tomo_posts(captures: Path) -> list[list[bytes]]:
    (path,) = (captures / "danmax-tomo").glob("dumpsardana*.cbors")
    return [list(rec.streams["sardana"].frames) for rec in read_dump(path)]


def synthetic(points: int = 5) -> list[list[bytes]]:
    counters = [ORCA, f"{HOST}/expchan/albaem_ctrl_01/4"]
    posts = [build_data_description(["tom_ry"], counters, serialno=7, total_scan_intervals=4)]
    for i in range(points):
        values = {"tom_ry": 45.0 * i, ORCA: f"/data/scan-7_orca.h5:{i}", counters[1]: 1e-12 * i}
        posts.append(build_record_data(i, values, timestamp=0.1 * i))
        if i == 2:
            posts.append(build_custom_data("note", "halfway"))
    posts.append(build_record_end(deadtime=0.5))
    return posts


def test_protocol_entry() -> None:
    assert PROTOCOL.typ == "sardana" and PROTOCOL.framer is SardanaFramer
    assert compat_parse is parse


def test_real_capture(captures: Path) -> None:
    posts = tomo_posts(captures)
    assert SardanaFramer.detect(posts[0])
    events, framer = run(posts)
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 11 + [Kind.END]
    assert [e.data.frames for e in events] == posts  # forwarded unchanged
    parsed = [parse(e.data) for e in events]
    desc = parsed[0]
    assert isinstance(desc, SardanaDataDescription)
    assert desc.serialno == 2536 and desc.title == "ascanct tom_ry 0.0 180.0 10 0.1 0.0"
    assert desc.ref_moveables == ["tom_ry"] and desc.total_scan_intervals == 10
    assert desc.scanfile == ["test.h5", "stream.daq"]
    assert desc.column_names[0] == "point_nb" and desc.column_names[-1] == "timestamp"
    assert desc.labels["orca"] == ORCA and desc.labels["pcap_rot"] == PCAP_ROT
    records = [p for p in parsed if isinstance(p, SardanaRecordData)]
    assert [r.point_nb for r in records] == list(range(11))
    assert [r.tom_ry for r in records] == [18.0 * i for i in range(11)]
    first = records[0]
    assert getattr(first, PCAP_ROT) == 8.792567706926157
    assert first[PCAP_ROT] == 8.792567706926157
    assert first.values[ORCA].endswith("scan-2536_orca.h5:entry/instrument/orca/")
    assert first.timestamp == 0.3939120583636108
    assert set(first.values) == set(desc.column_names)
    end = parsed[-1]
    assert isinstance(end, SardanaRecordEnd)
    assert end.endtime == "Mon Oct 28 15:02:41 2024" and end.deadtime == 4.783541679382324


def test_synthetic_posts_custom_data_ignored() -> None:
    events, framer = run(synthetic())
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 5 + [Kind.END]
    assert framer.drops.counts == {"custom_data post ignored": 1}
    desc = parse(events[0].data)
    assert isinstance(desc, SardanaDataDescription) and desc.labels["orca_ctrl"] == ORCA
    record = parse(events[3].data)
    assert isinstance(record, SardanaRecordData)
    assert record.point_nb == 2 and record["tom_ry"] == 90.0 and record[ORCA].endswith(":2")
    with pytest.raises(KeyError, match=r"no column 'nope'.*tom_ry"):
        record["nope"]


def test_unknown_types_and_bad_input_counted() -> None:
    posts = synthetic(2)
    events, framer = run(
        [
            posts[1],  # a record before the description
            posts[0],
            [b'{"type": "CustomData", "x": 1}'],
            [b'{"type": "Mystery"}'],
            [b"{truncated"],
            [b'{"type": "RecordData", "point_nb": 0}'],  # no timestamp
            *posts[1:],
            posts[1],  # after the end
        ]
    )
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert framer.drops.counts == {
        "before the start message": 1,
        "custom_data post ignored": 1,
        "post of unknown type ignored": 1,
        "malformed message": 2,
        "after the end message": 1,
    }
    assert "Mystery" in framer.drops.samples["post of unknown type ignored"]


def test_parse_errors_are_clear() -> None:
    with pytest.raises(ParseError, match="not valid JSON"):
        parse(StreamData("sardana", [b"<html>"]))
    with pytest.raises(ParseError, match="timestamp"):
        parse(StreamData("sardana", [b'{"type": "RecordData", "point_nb": 1}']))
    with pytest.raises(ParseError, match="type must be one of"):
        parse(StreamData("sardana", build_custom_data("a", 1)))
    with pytest.raises(ParseError, match="expected stream data of type sardana"):
        parse(StreamData("PCAP", build_record_end()))


def test_union_adapter_as_in_dranspose() -> None:
    packet = SardanaPacket.validate_json(build_record_data(3, {"m": 1.0}, 0.5)[0])
    assert isinstance(packet, SardanaRecordData) and packet.m == 1.0


def test_framer_drops_a_post_whose_type_is_not_a_string() -> None:
    from tango_dranspose.streams.sardana import SardanaFramer

    framer = SardanaFramer()
    assert framer.feed([b'{"type": [1]}']) == []
    assert framer.drops.total == 1
