from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import xspress3
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.xspress3 import (
    META_NAMES,
    XspressEnd,
    XspressFramer,
    XspressImage,
    XspressStart,
    build_end,
    build_header,
    build_image,
    build_image_old,
    parse,
)

# A pickle that would run os.system("echo pwned") if it were loaded with plain pickle.loads.
EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


def run(framer: XspressFramer, messages: Iterable[Sequence[Any]]) -> list[Framed]:
    out: list[Framed] = []
    for message in messages:
        out += framer.feed(message)
    return out + framer.flush()


def sd(frames: Sequence[Any]) -> StreamData:
    return StreamData("xspress", list(frames))


def spectra(seed: int = 0, channels: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).poisson(1.0, (channels, 4096)).astype(np.uint32)


def capture(captures: Path, name: str) -> tuple[list[Framed], XspressFramer]:
    framer = XspressFramer()
    return run(framer, read_raw_capture(captures / name)), framer


# -- recorded captures ----------------------------------------------------------------------


def test_old_format_capture(captures: Path) -> None:
    events, framer = capture(captures, "xspress3-dump.cbors")
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 20 + [Kind.END]
    assert all(e.data.length == 3 for e in events[1:-1])
    start = parse(events[0].data)
    assert isinstance(start, XspressStart)
    assert start.filename.endswith("dummy/scan_000002_xspress3.hdf5") and not start.overwritable
    images = [parse(e.data) for e in events[1:-1]]
    for frame, img in enumerate(images):
        assert isinstance(img, XspressImage) and img.data is not None
        assert img.frame == frame and img.exptime == pytest.approx(0.099999875)
        assert img.data.dtype == np.uint32 and img.data.shape == (4, 4096)
        assert list(img.meta) == list(META_NAMES[:8])
    first = images[0]
    assert isinstance(first, XspressImage)
    assert first.meta["ClockTicks"].tolist() == [7999990] * 4
    assert first.meta["event_widths"].dtype == np.int32
    assert isinstance(parse(events[-1].data), XspressEnd)


def test_new_multipart_capture(captures: Path) -> None:
    events, framer = capture(captures, "xspress3-multipart.cbors")
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 5 + [Kind.END]
    start = parse(events[0].data)
    assert isinstance(start, XspressStart)
    assert len(start.extra_tags) == 9 and start.extra_tags[-1] == "window_counts"  # type: ignore[attr-defined]
    assert np.asarray(start.limits).shape == (2, 4, 2)  # type: ignore[attr-defined]
    for frame, event in enumerate(events[1:-1]):
        img = parse(event.data)
        assert isinstance(img, XspressImage) and img.data is not None
        assert img.frame == frame and img.data.shape == (4, 4096)
        assert list(img.meta) == list(META_NAMES)
        assert img.meta["window_counts"].shape == (2, 4)


def test_xspress3_mini_capture(captures: Path) -> None:
    events, framer = capture(captures, "xspress3mini-dump20.cbors")
    assert framer.drops.total == 0
    images = [parse(e.data) for e in events if e.kind is Kind.DATA]
    assert len(images) == 22
    for img in images:
        assert isinstance(img, XspressImage) and img.data is not None
        assert img.data.shape == (2, 4096) and len(img.meta) == 8
    # Two rows of 11 points inside one header/series_end: frame numbers restart.
    assert [img.frame for img in images if isinstance(img, XspressImage)] == list(range(11)) * 2
    first = images[0]
    assert isinstance(first, XspressImage) and first.data is not None
    assert first.data[0, :3].tolist() == [24, 25, 28]


# -- synthetic messages ---------------------------------------------------------------------


@pytest.mark.parametrize("old_format", [False, True])
def test_both_formats_give_the_same_events(old_format: bool) -> None:
    data = [spectra(i) for i in range(3)]
    messages: list[list[bytes]] = [build_header("x.h5", extra_tags=["a"])]
    for frame, spec in enumerate(data):
        messages += build_image_old(spec, frame) if old_format else [build_image(spec, frame)]
    messages.append(build_end())
    framer = XspressFramer()
    events = run(framer, messages)
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 3 + [Kind.END]
    assert [e.data.length for e in events] == [1, 3, 3, 3, 1]
    for frame, (spec, event) in enumerate(zip(data, events[1:-1], strict=True)):
        img = parse(event.data)
        assert isinstance(img, XspressImage) and img.data is not None
        assert img.frame == frame
        np.testing.assert_array_equal(img.data, spec)
        assert img.meta["AllEvents"].tolist() == spec.sum(axis=1).tolist()
        assert img.meta["window_counts"].shape == (2, 4)


def test_meta_by_name_and_eight_arrays() -> None:
    spec = spectra(1, channels=2)
    meta = {name: np.full(2, i) for i, name in enumerate(META_NAMES[:8])}
    img = parse(sd(build_image(spec, 0, meta=meta)))
    assert isinstance(img, XspressImage)
    assert list(img.meta) == list(META_NAMES[:8]) and img.meta["dtc"].tolist() == [7, 7]


# -- bad input ------------------------------------------------------------------------------


def with_head(frames: list[bytes], **changes: Any) -> list[bytes]:
    head = json.loads(frames[0])
    head.update(changes)
    return [json.dumps(head).encode(), *frames[1:]]


def bad_images() -> dict[str, tuple[list[bytes], str]]:
    good = build_image(spectra(), 0)
    return {
        "malformed JSON": ([b"{nope", *good[1:]], "not valid JSON"),
        "wrong dtype": (with_head(good, type="uint33"), "not a numpy dtype"),
        "wrong shape": (with_head(good, shape=[5, 4096]), "needs 81920 bytes"),
        "one-dimensional shape": (with_head(good, shape=[16384]), "shape must be [channels, bins]"),
        "truncated spectra": ([good[0], good[1][:-4], good[2]], "the buffer has 65532"),
        "evil pickle": ([*good[:2], EVIL_PICKLE], "refusing to load"),
        "truncated pickle": ([*good[:2], good[2][:40]], "not a valid pickle"),
        "not a list": ([*good[:2], pickle.dumps({"ocr": 1})], "must be a list of arrays"),
        "too many arrays": ([*good[:2], pickle.dumps([np.zeros(4)] * 10)], "holds 10 arrays"),
        "text metadata": ([*good[:2], pickle.dumps(["a"] * 8)], "not numeric"),
    }


@pytest.mark.parametrize("name", list(bad_images()))
def test_bad_images(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    frames, text = bad_images()[name]
    with pytest.raises(ParseError, match=text.replace("[", r"\[").replace("]", r"\]")):
        parse(sd(frames))
    for old_format in (False, True):
        framer = XspressFramer()
        image_messages = [[f] for f in frames] if old_format else [frames]
        events = run(framer, [build_header(), *image_messages, build_end()])
        assert [e.kind for e in events] == [Kind.START, Kind.END]
        if name == "malformed JSON" and old_format:
            # The JSON part is not recognised as a header; its binary parts follow nothing.
            assert framer.drops.counts == {"binary part without an image header": 3}
        elif name == "malformed JSON":
            assert framer.drops.counts == {"invalid image message": 1}
        else:
            assert framer.drops.total == 1
            assert text in framer.drops.samples["invalid image message"]
    assert calls == []


def test_parse_frame_counts() -> None:
    good = build_image(spectra(), 0)
    with pytest.raises(ParseError, match="needs 3 frames"):
        parse(sd(good[:1]))
    with pytest.raises(ParseError, match="header has 1 frame, got 2"):
        parse(sd([*build_header(), b"x"]))
    with pytest.raises(ParseError, match="expected stream data of type xspress"):
        parse(StreamData("STINS", build_end()))


def test_incomplete_old_image_is_dropped() -> None:
    old = build_image_old(spectra(), 0)
    framer = XspressFramer()
    events = run(
        framer,
        [
            build_header(),
            old[0],  # header, then nothing of it: the next image starts
            *build_image_old(spectra(1), 1),
            old[0],
            old[1],  # header and spectra, then a new-format image
            build_image(spectra(2), 2),
            [b"\x00\x01binary"],  # a binary part with no header before it
            [b"{}", b"x"],  # two parts
            old[0],  # cut off by the end
            build_end(),
            old[0],  # cut off by the upstream ending (flush)
        ],
    )
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert [parse(e.data).frame for e in events[1:3]] == [1, 2]  # type: ignore[union-attr]
    assert framer.drops.counts == {
        "image header not followed by its spectra and metadata": 4,
        "binary part without an image header": 1,
        "message with 2 parts": 1,
    }


def test_scan_window() -> None:
    framer = XspressFramer()
    events = run(
        framer,
        [
            build_image(spectra(), 0),
            *build_image_old(spectra(), 1),
            build_header(),
            build_image(spectra(), 0),
            build_end(),
            build_image(spectra(), 1),
            [b'{"htype": "status"}'],
        ],
    )
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    assert framer.drops.counts == {
        "before the start message": 2,
        "after the end message": 1,
        "unknown htype 'status'": 1,
    }


def test_binary_part_starting_with_a_brace_is_data() -> None:
    spec = spectra(5)
    spec[0, 0] = ord("{")  # the raw spectra now begin with b"{"
    framer = XspressFramer()
    events = run(framer, [build_header(), *build_image_old(spec, 0), build_end()])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    img = parse(events[1].data)
    assert isinstance(img, XspressImage) and img.data is not None and img.data[0, 0] == 123


def test_detect_and_facades() -> None:
    assert XspressFramer.detect(build_header("f"))
    assert not XspressFramer.detect([b'{"htype": "header", "filename": "", "msg_number": 0}'])
    from tango_dranspose.compat.data import xspress3 as data
    from tango_dranspose.compat.middlewares import xspress as middleware

    assert middleware.parse is parse
    assert data.XspressImage is XspressImage
    assert isinstance(data.XspressPacket.validate_python({"htype": "series_end"}), XspressEnd)
    assert xspress3.PROTOCOL.typ == "xspress"


def test_zero_copy_frames_in_both_formats() -> None:
    from tests.streams.test_stream1 import FakeFrame

    spec = spectra(7)
    new = [FakeFrame(f) for f in build_image(spec, 0)]
    old = [[FakeFrame(m[0])] for m in build_image_old(spec, 1)]
    framer = XspressFramer()
    events = run(framer, [build_header(), new, *old, build_end()])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    img = parse(events[1].data)
    assert isinstance(img, XspressImage) and img.data is not None
    assert np.shares_memory(img.data, np.frombuffer(new[1].buffer, np.uint8))
    img = parse(events[2].data)
    assert isinstance(img, XspressImage) and img.frame == 1
    np.testing.assert_array_equal(img.data, spec)
