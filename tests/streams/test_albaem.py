from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tango_dranspose.compat.data.albaem import AlbaemData, AlbaemEnd, AlbaemPacket, AlbaemStart
from tango_dranspose.compat.middlewares.albaem import parse as compat_parse
from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.albaem import (
    PROTOCOL,
    AlbaemFramer,
    build_data,
    build_end,
    build_start,
    parse,
)
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.pcap import PCAPFramer
from tango_dranspose.streams.pcap import build_start as pcap_start


def run(messages: Iterable[list[Any]]) -> tuple[list[Framed], AlbaemFramer]:
    framer = AlbaemFramer()
    return [e for m in messages for e in framer.feed(m)], framer


def synthetic() -> list[list[bytes]]:
    data = [
        build_data(i, [1e-11 * i, 2e-11, 3e-10, 4e-10], 7.7 + i, 1704807770443944912 + i * 10**9)
        for i in range(4)
    ]
    return [build_start(), *data, build_end(6)]


def test_protocol_entry() -> None:
    assert PROTOCOL.typ == "albaem" and PROTOCOL.framer is AlbaemFramer
    assert compat_parse is parse


def test_real_capture(captures: Path) -> None:
    messages = list(read_raw_capture(captures / "albaem-dump.cbors"))
    assert AlbaemFramer.detect(messages[0]) and not PCAPFramer.detect(messages[0])
    events, framer = run(messages)
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 4 + [Kind.END]
    assert [e.data.frames for e in events] == messages  # forwarded unchanged
    parsed = [parse(e.data) for e in events]
    assert isinstance(parsed[0], AlbaemStart) and parsed[0].message_id == 1
    data = [p for p in parsed if isinstance(p, AlbaemData)]
    assert [d.frame_number for d in data] == [0, 1, 2, 3]
    assert data[0].channel1 == -2.8302592615927417e-11
    assert data[0].timestamp == 7.72645192
    assert data[0].acquisition_timestamp == 1704807770443944912
    assert data[3].channel4 == 4.76837158203125e-10
    assert data[3].channels[3] == data[3].channel4
    end = parsed[-1]
    assert isinstance(end, AlbaemEnd) and end.detector_specific is not None
    assert end.detector_specific.read_overflow is False
    assert end.detector_specific.memory_overflow is False


def test_synthetic_stream() -> None:
    events, framer = run(synthetic())
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 4 + [Kind.END]
    assert framer.drops.total == 0
    last = parse(events[4].data)
    assert isinstance(last, AlbaemData) and last.frame_number == 3 and last.message_id == 5
    assert last.channel1 == pytest.approx(3e-11)
    end = AlbaemPacket.validate_json(build_end(6, read_overflow=True)[0])
    assert isinstance(end, AlbaemEnd) and end.detector_specific
    assert end.detector_specific.read_overflow is True


def test_scan_window_and_bad_input() -> None:
    messages = synthetic()
    events, framer = run(
        [
            messages[1],  # data before the start
            messages[0],
            [b"{broken"],
            [b'{"version":1,"message_type":"data","message_id":3,"frame_number":1}'],
            messages[0],  # a second start inside the running scan
            *messages[1:],
            messages[2],  # after the end
        ]
    )
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 4 + [Kind.END]
    assert framer.drops.counts == {
        "before the start message": 1,
        "malformed message": 2,
        "start message inside a running scan": 1,
        "after the end message": 1,
    }


def test_parse_errors_are_clear() -> None:
    with pytest.raises(ParseError, match="not valid JSON"):
        parse(StreamData("albaem", [b"\x00\x01"]))
    with pytest.raises(ParseError, match="frame_number"):
        parse(
            StreamData(
                "albaem",
                [
                    b'{"version":1,"message_type":"data","message_id":3,'
                    b'"timestamp":1.0,"acquisition_timestamp":5,"channel1":1.0}'
                ],
            )
        )
    with pytest.raises(ParseError, match="message_type must be one of"):
        parse(StreamData("albaem", [b'{"version":1,"message_id":3}']))
    with pytest.raises(ValueError, match="4 channels"):
        build_data(0, [1.0], 0.0, 0)


def test_pcap_start_is_not_albaem() -> None:
    assert not AlbaemFramer.detect(pcap_start())
