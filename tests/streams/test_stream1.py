from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tango_dranspose.core.capture import read_dump
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import stream1
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.stream1 import (
    Stream1Data,
    Stream1End,
    Stream1Framer,
    Stream1Start,
    build_end,
    build_header,
    build_image,
    diffraction_ring,
    parse,
)


def run(framer: Stream1Framer, messages: Iterable[Sequence[Any]]) -> list[Framed]:
    out: list[Framed] = []
    for message in messages:
        out += framer.feed(message)
    return out + framer.flush()


def scan(images: Sequence[np.ndarray], compression: str = "none") -> list[list[bytes]]:
    messages = [build_header("out/cam.h5", msg_number=0)]
    messages += [build_image(img, i, i + 1, compression) for i, img in enumerate(images)]
    return [*messages, build_end(len(images) + 1)]


def sd(frames: list[Any]) -> StreamData:
    return StreamData("STINS", frames)


# -- recorded captures ----------------------------------------------------------------------


def test_xrd_dump(captures: Path) -> None:
    records = list(read_dump(captures / "dump_xrd.cbors"))
    assert len(records) == 11
    parsed = [parse(r.streams["xrd"]) for r in records]
    start, *images, end = parsed
    assert isinstance(start, Stream1Start)
    assert start.filename == "output/xrd.h5" and start.msg_number == 0 and start.meta is None
    assert len(images) == 9
    for i, image in enumerate(images):
        assert isinstance(image, Stream1Data)
        assert (image.frame, image.msg_number, image.compression) == (i, i + 1, "none")
        assert image.data is not None
        assert image.data.dtype == np.uint16 and image.data.shape == (10, 10)
    sums = [int(i.data.sum()) for i in images if isinstance(i, Stream1Data) and i.data is not None]
    assert sums[:3] == [991, 1001, 1041]
    assert isinstance(end, Stream1End) and end.msg_number == 10


def test_xrd_dump_replayed_through_the_framer(captures: Path) -> None:
    messages = [r.streams["xrd"].frames for r in read_dump(captures / "dump_xrd.cbors")]
    framer = Stream1Framer()
    events = run(framer, messages)
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 9 + [Kind.END]
    assert [e.data.length for e in events] == [1] + [2] * 9 + [1]
    assert all(e.data.typ == "STINS" for e in events)
    assert framer.drops.total == 0


def test_orca_dump_with_meta_frame_and_timestamps(captures: Path) -> None:
    (path,) = (captures / "danmax-tomo").glob("dumporca-*.cbors")
    records = list(read_dump(path))
    assert len(records) == 13
    start = parse(records[0].streams["orca"])
    assert isinstance(start, Stream1Start)
    assert start.filename.endswith("scan-2536_orca.h5")
    assert start.msg_number == 210  # the receiver counts across scans
    assert start.meta is not None
    assert start.meta["expected_data"] == {
        "shape": [4, 128],
        "type": "uint16",
        "compression": "none",
    }
    image = parse(records[1].streams["orca"])
    assert isinstance(image, Stream1Data)
    assert image.frame == 1 and image.data is not None and image.data.shape == (4, 128)
    extra = image.timestamps  # type: ignore[attr-defined]  # an extra field, kept
    assert extra == {"dcu": "2024-10-28T14:02:38.534415+00:00"}
    framer = Stream1Framer()
    events = run(framer, [r.streams["orca"].frames for r in records])
    assert [e.data.length for e in events] == [2] + [2] * 11 + [1]
    assert framer.drops.total == 0


# -- synthetic messages ---------------------------------------------------------------------


def test_synthetic_scan_round_trip() -> None:
    images = [diffraction_ring((48, 64), radius=15, seed=s) for s in range(3)]
    framer = Stream1Framer()
    events = run(framer, scan(images))
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.DATA, Kind.END]
    parsed = [parse(e.data) for e in events]
    for image, packet in zip(images, parsed[1:-1], strict=True):
        assert isinstance(packet, Stream1Data) and packet.data is not None
        np.testing.assert_array_equal(packet.data, image)
        assert packet.type == "uint16" and packet.shape == [48, 64]
    assert isinstance(parsed[0], Stream1Start) and parsed[0].filename == "out/cam.h5"


def test_image_data_is_a_view_of_the_frame() -> None:
    frames = build_image(np.arange(6, dtype=np.uint32).reshape(2, 3), 0, 1)
    buffer = bytearray(frames[1])
    packet = parse(sd([frames[0], buffer]))
    assert isinstance(packet, Stream1Data) and packet.data is not None
    buffer[0] = 99  # the array sees the frame: no copy was made
    assert packet.data[0, 0] == 99
    assert packet.buffer is buffer


def test_header_meta_frame_and_extras() -> None:
    frames = build_header("", 5, meta={"label": "x"}, detector="orca")
    packet = parse(sd(frames))
    assert isinstance(packet, Stream1Start)
    assert packet.filename == "" and packet.meta == {"label": "x"}
    assert packet.detector == "orca"  # type: ignore[attr-defined]


def test_bslz4_image_is_decoded() -> None:
    image = diffraction_ring((40, 40), radius=10)
    packet = parse(sd(build_image(image, 0, 1, compression="bslz4")))
    assert isinstance(packet, Stream1Data) and packet.compression == "bslz4"
    assert packet.data is not None
    np.testing.assert_array_equal(packet.data, image)


def test_undecodable_compression_keeps_the_raw_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    image = diffraction_ring((16, 16), radius=5)
    frames = build_image(image, 0, 1, compression="bslz4")
    monkeypatch.setitem(sys.modules, "bitshuffle", None)
    packet = parse(sd(frames))
    assert isinstance(packet, Stream1Data)
    assert packet.data is None and packet.buffer == frames[1]
    head = json.loads(frames[0])
    head["compression"] = "zstd"
    packet = parse(sd([json.dumps(head).encode(), frames[1]]))
    assert isinstance(packet, Stream1Data) and packet.data is None
    # The framer does not decompress, so it forwards such images.
    events = run(Stream1Framer(), [build_header(), [json.dumps(head).encode(), frames[1]]])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA]


def test_diffraction_ring() -> None:
    image = diffraction_ring((101, 101), radius=30, width=2, seed=4)
    assert image.dtype == np.uint16 and image.shape == (101, 101)
    np.testing.assert_array_equal(image, diffraction_ring((101, 101), radius=30, width=2, seed=4))
    assert image[50, 80] > 10 * image[50, 50]  # on the ring vs. the centre
    assert not np.array_equal(image, diffraction_ring((101, 101), radius=30, width=2, seed=5))


# -- bad input ------------------------------------------------------------------------------


def image_head(**changes: Any) -> bytes:
    head = {
        "htype": "image",
        "frame": 0,
        "shape": [2, 2],
        "type": "uint16",
        "compression": "none",
        "msg_number": 1,
    }
    head.update(changes)
    return json.dumps(head).encode()


GOOD_BUFFER = np.zeros((2, 2), np.uint16).tobytes()

BAD_IMAGES = {
    "malformed JSON": ([b"{not json", GOOD_BUFFER], "not valid JSON"),
    "JSON but not an object": ([b"[1, 2]", GOOD_BUFFER], "must be a JSON object"),
    "one frame": ([image_head()], "needs 2 frames, got 1"),
    "three frames": ([image_head(), GOOD_BUFFER, b""], "needs 2 frames, got 3"),
    "wrong dtype": ([image_head(type="uint17"), GOOD_BUFFER], "not a numpy dtype"),
    "wrong shape": ([image_head(shape=[3, 2]), GOOD_BUFFER], "needs 12 bytes, the buffer has 8"),
    "truncated buffer": ([image_head(), GOOD_BUFFER[:5]], "needs 8 bytes, the buffer has 5"),
    "missing field": ([image_head(frame=None), GOOD_BUFFER], "frame"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_raise_from_parse_and_are_dropped_by_the_framer(name: str) -> None:
    frames, text = BAD_IMAGES[name]
    with pytest.raises(ParseError, match=text):
        parse(sd(list(frames)))
    framer = Stream1Framer()
    events = run(framer, [build_header(), frames, build_end(2)])
    assert [e.kind for e in events] == [Kind.START, Kind.END]
    assert framer.drops.total == 1
    if "JSON" in name:
        assert framer.drops.counts == {"first frame is not a JSON object": 1}
    else:
        assert framer.drops.counts == {"invalid image message": 1}
        assert text in framer.drops.samples["invalid image message"]


def test_unknown_htype_and_wrong_typ() -> None:
    with pytest.raises(ParseError, match="htype"):
        parse(sd([b'{"htype": "dimage-1.0"}']))
    with pytest.raises(ParseError, match="expected stream data of type STINS"):
        parse(StreamData("xspress", build_end(1)))
    with pytest.raises(ParseError, match="needs 1 frames"):
        parse(sd([]))
    framer = Stream1Framer()
    assert framer.feed([b'{"htype": "dimage-1.0"}']) == []
    assert framer.feed([]) == []
    assert framer.drops.counts == {"unknown htype 'dimage-1.0'": 1, "empty message": 1}


def test_scan_window() -> None:
    image = np.zeros((2, 2), np.uint16)
    framer = Stream1Framer()
    messages = [
        build_image(image, 0, 1),  # before the header
        build_end(2),  # also before
        build_header(),
        build_image(image, 0, 1),
        build_header(),  # a second header inside the scan
        build_end(2),
        build_image(image, 1, 3),  # after the end
    ]
    events = run(framer, messages)
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    assert framer.drops.counts == {
        "before the start message": 2,
        "start message inside a running scan": 1,
        "after the end message": 1,
    }
    # The next header starts the next scan.
    assert [e.kind for e in framer.feed(build_header())] == [Kind.START]


def test_detect_and_protocol_entry() -> None:
    assert Stream1Framer.detect(build_header("x"))
    assert not Stream1Framer.detect([b'{"htype": "header", "filename": "", "overwritable": 0}'])
    assert not Stream1Framer.detect([b"\x00\x01"])
    assert stream1.PROTOCOL.typ == "STINS"
    assert stream1.PROTOCOL.framer is Stream1Framer and stream1.PROTOCOL.parse is parse


def test_compat_facades() -> None:
    from tango_dranspose.compat.data import stream1 as data
    from tango_dranspose.compat.middlewares import stream1 as middleware

    assert middleware.parse is parse
    assert data.Stream1Data is Stream1Data and data.SeriesStart is Stream1Start
    packet = data.Stream1Packet.validate_python({"htype": "series_end", "msg_number": 3})
    assert isinstance(packet, Stream1End)


class FakeFrame:
    """Shaped like ``zmq.Frame``: ``.buffer`` (zero-copy) and ``.bytes``."""

    def __init__(self, data: bytes) -> None:
        self._data = bytearray(data)

    @property
    def buffer(self) -> memoryview:
        return memoryview(self._data)

    @property
    def bytes(self) -> bytes:
        return bytes(self._data)


def test_zero_copy_frames() -> None:
    image = diffraction_ring((8, 8), radius=3)
    messages = [[FakeFrame(f) for f in m] for m in scan([image])]
    events = run(Stream1Framer(), messages)
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    packet = parse(events[1].data)
    assert isinstance(packet, Stream1Data) and packet.data is not None
    np.testing.assert_array_equal(packet.data, image)
    frame = messages[1][1]
    assert np.shares_memory(packet.data, np.frombuffer(frame.buffer, np.uint8))
