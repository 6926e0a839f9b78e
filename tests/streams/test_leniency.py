"""Messages dranspose accepts and real payloads or their test sources send: accepted here too
(docs/sources.md, "Leniency compared with dranspose")."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import (
    albaem,
    eiger_legacy,
    lecroy,
    positioncap,
    sardana,
    stream1,
    xspress3,
)
from tango_dranspose.streams.base import Kind, ParseError


def xspress_image(meta: list[object]) -> list[bytes]:
    spectra = np.ones((4, 10))
    head = {"htype": "image", "frame": 0, "shape": [4, 10], "exptime": 0.1, "type": "float64"}
    head["compression"] = "none"
    return [json.dumps(head).encode(), spectra.tobytes(), pickle.dumps(meta)]


@pytest.mark.parametrize(
    "meta, names",
    [
        ([], []),  # XspressImage(meta={}).to_stream_data()
        ([1], ["ocr"]),  # dranspose's example source: meta={"ocr": 1}
        ([np.zeros(4)] * 8, list(xspress3.META_NAMES[:8])),
        ([np.zeros(4)] * 9, list(xspress3.META_NAMES)),
    ],
)
def test_xspress_metadata_of_any_known_length(meta: list[object], names: list[str]) -> None:
    frames = xspress_image(meta)
    framer = xspress3.XspressFramer()
    framer.feed([b'{"htype": "header", "filename": ""}'])
    assert [e.kind for e in framer.feed(frames)] == [Kind.DATA]
    assert framer.drops.total == 0
    parsed = xspress3.parse(StreamData("xspress", frames))
    assert isinstance(parsed, xspress3.XspressImage) and list(parsed.meta) == names


def test_xspress_metadata_with_more_arrays_than_names() -> None:
    with pytest.raises(ParseError, match="holds 10 arrays, at most 9"):
        xspress3.parse(StreamData("xspress", xspress_image([0] * 10)))


def test_xspress_header_as_dranspose_builds_it_is_recognised() -> None:
    dranspose_header = [b'{"htype": "header", "filename": ""}']
    assert xspress3.XspressFramer.detect(dranspose_header)
    assert xspress3.XspressFramer.detect(xspress3.build_header("x.h5"))
    assert not xspress3.XspressFramer.detect(stream1.build_header("x.h5"))


def test_lecroy_events_tagged_as_dranspose_tags_them() -> None:
    run = lecroy.build_run(sequences=1, channels=(2,), samples=8)
    framer = lecroy.LecroyFramer()
    events = [e for message in run for e in framer.feed(message)]
    sequence = events[1].data
    parsed = lecroy.parse(StreamData(lecroy.DRANSPOSE_TYP, sequence.frames))
    assert isinstance(parsed, lecroy.LecroyParsed) and parsed.data[0].shape == (1, 8)


def test_lecroy_timestamps_pickled_as_an_array() -> None:
    parts = lecroy.build_trace(2, np.zeros((3, 8)), 0, 1.0, [0.0])
    parts[2] = pickle.dumps(np.array([1.5, 2.5, 3.5]))
    _, waveforms, stamps = lecroy.parse_trace(parts)
    assert stamps == [1.5, 2.5, 3.5] and waveforms.shape == (3, 8)


def test_albaem_data_without_all_channels() -> None:
    message = json.loads(albaem.build_data(0, [1.0, 2.0, 3.0, 4.0], 0.1, 100)[0])
    del message["channel3"], message["channel4"]
    framer = albaem.AlbaemFramer()
    framer.feed(albaem.build_start())
    (event,) = framer.feed([json.dumps(message).encode()])
    parsed = albaem.parse(event.data)
    assert isinstance(parsed, albaem.AlbaemData)
    assert parsed.channels == (1.0, 2.0, None, None)


def test_sardana_record_without_point_nb() -> None:
    framer = sardana.SardanaFramer()
    framer.feed(sardana.build_data_description(["mot"], []))
    (event,) = framer.feed([b'{"type": "RecordData", "timestamp": 0.5, "mot": 1.0}'])
    record = sardana.parse(event.data)
    assert isinstance(record, sardana.SardanaRecordData)
    assert record.point_nb is None and record["mot"] == 1.0


def test_eiger_messages_without_series() -> None:
    header = json.loads(eiger_legacy.build_header({}, header_detail="none")[0])
    del header["series"]
    image = eiger_legacy.build_image(np.zeros((4, 4), np.uint16), 0, compression="none")
    image_head = json.loads(image[0])
    del image_head["series"]
    framer = eiger_legacy.EigerLegacyFramer()
    events = framer.feed([json.dumps(header).encode()])
    events += framer.feed([json.dumps(image_head).encode(), *image[1:]])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA]
    parsed = eiger_legacy.parse(events[1].data)
    assert isinstance(parsed, eiger_legacy.EigerLegacyImage) and parsed.series is None


def test_position_capture_header_as_dranspose_writes_it() -> None:
    # PositionCapStart.to_stream_data() in dranspose: no closing blank line.
    header = (
        b"arm_time: 2024-10-07T08:49:10.627000Z\nmissed: 0\nprocess: Scaled\nformat: ASCII\n"
        b"fields:\n PCAP.BITS0 uint32 Value\n INENC1.VAL double Mean\n"
    )
    parser = positioncap.PositioncapParser()
    start = parser.parse(StreamData("PCAP_RAW", [header]))
    assert isinstance(start, positioncap.PositionCapStart)
    assert [f.name for f in start.fields] == ["PCAP.BITS0.Value", "INENC1.VAL.Mean"]
    values = parser.parse(StreamData("PCAP_RAW", [b" 1 1.0\n"]))
    assert values.values == {"PCAP.BITS0.Value": 1, "INENC1.VAL.Mean": 1.0}
