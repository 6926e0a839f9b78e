from __future__ import annotations

import random
from pathlib import Path

import pytest

from tango_dranspose.compat.data.positioncap import (
    PositionCapEnd,
    PositionCapStart,
    PositionCapValues,
)
from tango_dranspose.compat.middlewares.positioncap import PositioncapParser
from tango_dranspose.core.capture import read_dump
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.positioncap import (
    HANDSHAKE_REPLY,
    MAX_LINE,
    PROTOCOL,
    TOMO_FIELDS,
    PositionCapFramer,
    build_arm,
    build_end,
    build_header,
    build_values,
    field,
    parse,
    parse_header,
    rotation_rows,
)


def tomo_frames(captures: Path) -> list[bytes]:
    (path,) = (captures / "danmax-tomo").glob("dumppcap_rot*.cbors")
    frames = [frame for rec in read_dump(path) for frame in rec.streams["pcap_rot"].frames]
    assert all(rec.streams["pcap_rot"].typ == "PCAP_RAW" for rec in read_dump(path))
    return frames


def feed_in_chunks(framer: PositionCapFramer, stream: bytes, size: int) -> list[Framed]:
    events: list[Framed] = []
    for i in range(0, len(stream), size):
        events += framer.feed([stream[i : i + size]])
    return events + framer.flush()


def frames_of(events: list[Framed]) -> list[bytes]:
    return [bytes(e.data.frames[0]) for e in events]


def test_protocol_entry() -> None:
    assert PROTOCOL.typ == "PCAP_RAW"
    assert PROTOCOL.framer is PositionCapFramer


def test_real_capture_byte_stream_any_split(captures: Path) -> None:
    frames = tomo_frames(captures)
    assert len(frames) == 13
    stream = HANDSHAKE_REPLY + b"".join(frames)
    whole = PositionCapFramer()
    reference = feed_in_chunks(whole, stream, len(stream))
    assert frames_of(reference) == frames  # header block, 11 lines, END: exactly as recorded
    assert [e.kind for e in reference] == [Kind.START] + [Kind.DATA] * 11 + [Kind.END]
    assert whole.drops.total == 0  # the OK handshake is skipped silently
    for size in (1, 2, 7, 64):
        framer = PositionCapFramer()
        events = feed_in_chunks(framer, stream, size)
        assert frames_of(events) == frames, size
        assert [e.kind for e in events] == [e.kind for e in reference]
        assert framer.drops.total == 0
    rng = random.Random(4)
    cuts = sorted(rng.sample(range(1, len(stream)), 40))
    framer = PositionCapFramer()
    events = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += framer.feed([memoryview(stream)[a:b]])
    assert frames_of(events) == frames


def test_real_capture_values(captures: Path) -> None:
    parser = PositioncapParser()
    parsed = [parser.parse(StreamData("PCAP_RAW", [f])) for f in tomo_frames(captures)]
    start, rows, end = parsed[0], parsed[1:-1], parsed[-1]
    assert isinstance(start, PositionCapStart)
    assert start.arm_time.year == 1970  # the PandA's clock was not set
    assert start.process == "Scaled" and start.format == "ASCII" and start.missed == 0
    assert [f.name for f in start.fields] == [
        "PCAP.BITS0.Value",
        "INENC2.VAL.Min",
        "INENC2.VAL.Max",
        "PCAP.TS_TRIG.Value",
        "INENC2.VAL.Mean",
        "SFP3_SYNC_IN.POS1.Mean",
    ]
    assert start.fields[3].scale == 8e-09 and start.fields[3].units == "s"
    assert start.fields[0].scale is None
    assert len(rows) == 11 and all(isinstance(r, PositionCapValues) for r in rows)
    first, last = rows[0], rows[-1]
    assert isinstance(first, PositionCapValues) and isinstance(last, PositionCapValues)
    assert first.fields["PCAP.TS_TRIG.Value"].value == 0.614804288
    assert first["PCAP.TS_TRIG.Value"] == 0.614804288
    assert first.fields["PCAP.BITS0.Value"].value == 64806368
    assert isinstance(first.fields["PCAP.BITS0.Value"].value, int)
    assert isinstance(first.fields["INENC2.VAL.Mean"].value, float)
    assert first.values["SFP3_SYNC_IN.POS1.Mean"] == 701422573.3
    assert last["PCAP.TS_TRIG.Value"] == 1.944629568
    assert last["SFP3_SYNC_IN.POS1.Mean"] == -1446088113.0
    assert first.fields["INENC2.VAL.Mean"].type == "double"
    assert isinstance(end, PositionCapEnd) and end.samples == 11 and end.reason == "Disarmed"


def test_builders_reproduce_the_recorded_header(captures: Path) -> None:
    recorded = tomo_frames(captures)[0]
    start = parse_header(recorded.decode())
    assert build_header(start.fields, start.arm_time) == recorded
    assert (
        build_values([64806368, 35005, 35005, 0.614804288, 35005, 701422573.3])
        == (tomo_frames(captures)[1])
    )
    assert build_end(11) == b"END 11 Disarmed\n"


def test_synthetic_arm_one_byte_at_a_time() -> None:
    rows = rotation_rows(11)
    stream = HANDSHAKE_REPLY + build_arm(rows)
    framer = PositionCapFramer()
    events = feed_in_chunks(framer, stream, 1)
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 11 + [Kind.END]
    assert framer.drops.total == 0
    parser = PositioncapParser()
    parsed = [parser.parse(e.data) for e in events]
    angles = [p["INENC2.VAL.Mean"] for p in parsed[1:-1] if isinstance(p, PositionCapValues)]
    assert angles == [18.0 * i for i in range(11)]
    assert parser.arm_time is not None and len(parser.fields) == len(TOMO_FIELDS)


def two_arms() -> tuple[bytes, bytes]:
    line_fields = (field("PCAP.TS_TRIG.Value", scale=8e-09, units="s"), field("INENC1.VAL.Mean"))
    first = build_arm(rotation_rows(3))
    second = build_arm([(0.1, 1.5), (0.2, 2.5)], line_fields)
    return first, second


def test_second_arm_dropped_until_reset() -> None:
    first, second = two_arms()
    framer = PositionCapFramer()
    events = framer.feed([HANDSHAKE_REPLY + first + second])
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 3 + [Kind.END]
    # header, 2 lines and END of the second arm: all after this scan's end
    assert framer.drops.counts == {"after the end message": 4}


def test_two_arms_one_connection_with_reset_between_scans() -> None:
    first, second = two_arms()
    framer = PositionCapFramer()
    # The second header arrives split across the reset: the connection's bytes survive it.
    events = framer.feed([HANDSHAKE_REPLY + first + second[:10]])
    assert [e.kind for e in events][-1] is Kind.END
    framer.reset()
    events2 = framer.feed([second[10:]])
    assert [e.kind for e in events2] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert framer.drops.total == 0
    parser = PositioncapParser()
    parsed = [parser.parse(e.data) for e in events + events2]
    second_rows = [p for p in parsed[-3:-1] if isinstance(p, PositionCapValues)]
    assert [r.values for r in second_rows] == [
        {"PCAP.TS_TRIG.Value": 0.1, "INENC1.VAL.Mean": 1.5},
        {"PCAP.TS_TRIG.Value": 0.2, "INENC1.VAL.Mean": 2.5},
    ]


def test_two_arms_in_one_scan_with_multi_arm() -> None:
    first, second = two_arms()
    framer = PositionCapFramer(multi_arm=True)
    events = feed_in_chunks(framer, HANDSHAKE_REPLY + first + second, 5)
    kinds = [e.kind for e in events]
    assert kinds == [
        Kind.START,
        *[Kind.DATA] * 3,
        Kind.END,
        Kind.START,
        Kind.DATA,
        Kind.DATA,
        Kind.END,
    ]
    assert framer.drops.total == 0


def test_bad_input_is_counted_never_raised() -> None:
    header = build_header()
    stream = (
        b" 1 2 3 4 5 6\n"  # before any header
        + header
        + build_values([1, 2.0, 3.0, 0.5, 4.0, 5.0])
        + b" 1 2.0 abc 0.5 4.0 5.0\n"  # not a number
        + b" 1.5 2 3 0.5 4 5\n"  # uint32 field with a fraction
        + b" 1 2 3\n"  # too few values
        + b"\xff\xfe garbage\n"
        + b"\n"
        + b"END eleven Disarmed\n"
        + build_end(1)
        + b" 1 2 3 4 5 6\n"  # after the end
        + b"partial line without newl"
    )
    framer = PositionCapFramer()
    events = feed_in_chunks(framer, stream, 3)
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    assert framer.drops.counts == {
        "before the start message": 1,
        "malformed value line": 4,
        "empty line": 1,
        "malformed END line": 1,
        "after the end message": 1,
        "incomplete line at the end of the stream": 1,
    }


def test_malformed_and_unsupported_headers_dropped() -> None:
    bad_type = b"arm_time: 2024-01-01T00:00:00Z\nfields:\n X.Y complex Value\n\n"
    binary = build_header().replace(b"format: ASCII", b"format: Binary")
    framer = PositionCapFramer()
    assert framer.feed([bad_type + binary + b" 1 2 3 4 5 6\n"]) == []
    assert framer.drops.counts == {
        "malformed header": 1,
        "unsupported data format (only ASCII)": 1,
        "before the start message": 1,
    }
    assert "complex" in framer.drops.samples["malformed header"]


def test_overlong_line_is_dropped_and_stream_recovers() -> None:
    framer = PositionCapFramer()
    framer.feed([build_header()])
    for _ in range(3):
        assert framer.feed([b"9" * (MAX_LINE // 2)]) == []
    events = framer.feed([b"\n" + build_values([1, 2, 3, 4, 5, 6])])
    assert [e.kind for e in events] == [Kind.DATA]
    assert framer.drops.counts == {"line too long": 1}


def test_parse_errors_are_clear() -> None:
    with pytest.raises(ParseError, match="PositioncapParser"):
        parse(StreamData("PCAP_RAW", [b" 1 2 3\n"]))
    assert isinstance(parse(StreamData("PCAP_RAW", [build_header()])), PositionCapStart)
    assert parse(StreamData("PCAP_RAW", [b"END 3 Disarmed\n"])) == PositionCapEnd(
        samples=3, reason="Disarmed"
    )
    parser = PositioncapParser()
    with pytest.raises(ParseError, match="before any header"):
        parser.parse(StreamData("PCAP_RAW", [b" 1 2 3\n"]))
    parser.parse(StreamData("PCAP_RAW", [build_header()]))
    with pytest.raises(ParseError, match="3 values but the header declares 6"):
        parser.parse(StreamData("PCAP_RAW", [b" 1 2 3\n"]))
    with pytest.raises(ParseError, match="abc"):
        parser.parse(StreamData("PCAP_RAW", [b" 1 2 abc 4 5 6\n"]))
    with pytest.raises(ParseError, match="ASCII"):
        parser.parse(StreamData("PCAP_RAW", [b"\xff\n"]))
    with pytest.raises(ParseError, match="no 'fields:' section"):
        parse_header("arm_time: 2024-01-01T00:00:00Z\n\n")
    with pytest.raises(ParseError, match="arm_time"):
        parse_header("fields:\n X.Y double Value\n\n")
    with pytest.raises(ParseError, match="expected stream data of type PCAP_RAW"):
        parse(StreamData("PCAP", [build_header()]))


def test_detect() -> None:
    assert PositionCapFramer.detect([build_header()])
    assert PositionCapFramer.detect([HANDSHAKE_REPLY + build_header()])
    assert not PositionCapFramer.detect([b'{"message_type": "series-start"}'])
    assert not PositionCapFramer.detect([])


def test_memoryview_and_bytearray_chunks() -> None:
    stream = build_arm(rotation_rows(2))
    framer = PositionCapFramer()
    events = framer.feed([bytearray(stream[:50])]) + framer.feed([memoryview(stream)[50:]])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]


def test_header_field_with_name_or_type_attribute_does_not_crash_the_framer() -> None:
    from tango_dranspose.streams.positioncap import PositionCapFramer

    header = (
        b"arm_time: 2024-01-01T00:00:00.000Z\nmissed: 0\nprocess: Scaled\nformat: ASCII\n"
        b"fields:\n COUNTER1.OUT double Value name: x type: y\n\n"
    )
    framer = PositionCapFramer()
    events = framer.feed([header + b" 1.5\nEND 1 Disarmed\n"])
    assert [e.kind.value for e in events] == ["start", "data", "end"]
