from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import codecs, eiger_legacy
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.eiger_legacy import (
    EigerLegacyEnd,
    EigerLegacyFramer,
    EigerLegacyHeader,
    EigerLegacyImage,
    build_end,
    build_header,
    build_image,
    parse,
)

CONFIG = {"nimages": 2, "x_pixels_in_detector": 6, "y_pixels_in_detector": 4, "bit_depth_image": 32}


def run(framer: EigerLegacyFramer, messages: Iterable[Sequence[Any]]) -> list[Framed]:
    out: list[Framed] = []
    for message in messages:
        out += framer.feed(message)
    return out + framer.flush()


def sd(frames: Sequence[Any]) -> StreamData:
    return StreamData("EIGER_LEGACY", list(frames))


def image(seed: int = 0, dtype: str = "uint32") -> np.ndarray:
    # Not square, so that a swapped [x, y] would show.
    return np.random.default_rng(seed).poisson(4.0, (4, 6)).astype(dtype)


# -- recorded capture -----------------------------------------------------------------------


def test_eiger_small_capture(captures: Path) -> None:
    messages = list(read_raw_capture(captures / "eiger-small.cbors"))
    framer = EigerLegacyFramer()
    events = run(framer, messages)
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.DATA, Kind.END]
    assert [e.data.length for e in events] == [9, 5, 5, 5, 1]
    assert framer.drops.total == 0

    header = parse(events[0].data)
    assert isinstance(header, EigerLegacyHeader)
    assert (header.header_detail, header.series) == ("all", 6)
    assert header.info["nimages"] == 3 and header.info["compression"] == "bslz4"
    assert header.info["x_pixels_in_detector"] == 3108
    assert header.info["description"] == "Dectris EIGER2 CdTe 9M"
    assert header.appendix["collect_dict"]["col_id"] == 128579
    assert header.countrate_table is not None and header.flatfield is not None
    table = header.countrate_table.array()
    assert table.dtype == np.float32 and table.shape == (1001, 2)  # Dectris says [2, 1001]
    assert table[0].tolist() == [0.0, 0.0] and table[1, 0] == pytest.approx(8327.119, abs=1e-3)
    assert header.flatfield.shape == [3108, 3262] and header.flatfield.type == "float32"
    with pytest.raises(ParseError, match="needs 40553184 bytes, the buffer has 20000"):
        header.flatfield.array()  # the capture's blobs are truncated
    assert header.pixel_mask is not None and header.pixel_mask.type == "uint32"

    images = [parse(e.data) for e in events[1:4]]
    for frame, img in enumerate(images):
        assert isinstance(img, EigerLegacyImage)
        assert (img.frame, img.series) == (frame, 6)
        assert img.data["encoding"] == "bs32-lz4<" and img.data["type"] == "uint32"
        assert img.data["shape"] == [3108, 3262] and len(img.data["buffer"]) == 20000
        assert img.config["real_time"] == 9999900
        assert img.appendix == {}
        with pytest.raises(ParseError, match="truncated"):
            img.array()
    first = images[0]
    assert isinstance(first, EigerLegacyImage) and first.data["size"] == 755083
    assert first.hash == "59bb3a04cd9d59d54e283c465036085c"
    end = parse(events[4].data)
    assert isinstance(end, EigerLegacyEnd) and end.series == 6


# -- synthetic messages ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_image_round_trip(compression: str) -> None:
    for dtype in ("uint16", "uint32"):
        original = image(1, dtype)
        frames = build_image(original, frame=7, series=3, compression=compression)
        packet = parse(sd(frames))
        assert isinstance(packet, EigerLegacyImage)
        assert packet.data["shape"] == [6, 4]  # [x, y]
        assert packet.data["encoding"] == eiger_legacy.encoding_for(compression, original.dtype)
        assert packet.data["size"] == len(frames[2])
        decoded = packet.array()
        assert decoded.shape == (4, 6) and decoded.dtype == original.dtype
        np.testing.assert_array_equal(decoded, original)


def test_encodings() -> None:
    assert eiger_legacy.encoding_for("bslz4", np.dtype("uint16")) == "bs16-lz4<"
    assert eiger_legacy.encoding_for("lz4", np.dtype("uint32")) == "lz4<"
    assert eiger_legacy.encoding_for("none", np.dtype("uint32")) == "<"


@pytest.mark.parametrize(("detail", "parts"), [("none", 1), ("basic", 2), ("all", 8)])
def test_header_details(detail: str, parts: int) -> None:
    for appendix in (None, {"user": 1}):
        frames = build_header(CONFIG, series=2, header_detail=detail, appendix=appendix)
        assert len(frames) == parts + (appendix is not None)
        packet = parse(sd(frames))
        assert isinstance(packet, EigerLegacyHeader)
        assert packet.appendix == appendix
        assert packet.info == ({} if detail == "none" else CONFIG)
        if detail == "all":
            assert packet.flatfield is not None and packet.pixel_mask is not None
            assert packet.flatfield.array().shape == (4, 6)
            assert packet.pixel_mask.array().dtype == np.uint32
            assert packet.countrate_table is not None
            assert packet.countrate_table.array().shape == (1001, 2)
        else:
            assert packet.flatfield is None


def test_synthetic_series_through_the_framer() -> None:
    framer = EigerLegacyFramer()
    messages = [
        build_header(CONFIG, header_detail="basic"),
        build_image(image(0), 0),
        build_image(image(1), 1, appendix=None),  # 4 parts: no image appendix
        build_end(),
    ]
    events = run(framer, messages)
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert [e.data.length for e in events] == [2, 5, 4, 1]
    last = parse(events[2].data)
    assert isinstance(last, EigerLegacyImage) and last.appendix is None
    np.testing.assert_array_equal(last.array(), image(1))
    assert EigerLegacyFramer.detect(messages[0]) and not EigerLegacyFramer.detect(messages[1])


# -- bad input ------------------------------------------------------------------------------


def replace_json(frames: list[bytes], index: int, **changes: Any) -> list[bytes]:
    head = json.loads(frames[index])
    head.update(changes)
    return [*frames[:index], json.dumps(head).encode(), *frames[index + 1 :]]


def bad_messages() -> dict[str, tuple[list[bytes], str]]:
    good = build_image(image(2), 0, compression="none")
    header = build_header(CONFIG, header_detail="all")
    return {
        "malformed JSON": ([b"{oops", *good[1:]], "not valid JSON"),
        "header part count": (header[:5], "has 8 parts (+1 appendix), got 5"),
        "unknown header detail": (replace_json(header, 0, header_detail="most"), "header_detail"),
        "config not JSON": ([header[0], b"\x00\x01", *header[2:]], "configuration"),
        "flatfield part htype": (replace_json(header, 2, htype="dmask-1.0"), "dflatfield-1.0"),
        "image part count": (good[:3], "has 5 parts (4 without appendix), got 3"),
        "dimage_d htype": (replace_json(good, 1, htype="dimage-1.0"), "dimage_d-1.0"),
        "wrong dtype": (replace_json(good, 1, type="complex64"), "not a numeric dtype"),
        "wrong shape": (replace_json(good, 1, shape=[4, 4]), "needs 64 bytes, the buffer has 96"),
        "truncated raw blob": ([*good[:2], good[2][:50], *good[3:]], "the buffer has 50"),
        "dconfig htype": (replace_json(good, 3, htype="dimage-1.0"), "dconfig-1.0"),
        "end with two parts": ([*build_end(), b"{}"], "series end has 1 part"),
    }


@pytest.mark.parametrize("name", list(bad_messages()))
def test_bad_messages(name: str) -> None:
    frames, text = bad_messages()[name]
    with pytest.raises(ParseError, match=re.escape(text)):
        parse(sd(frames))
    framer = EigerLegacyFramer()
    if b"dheader" not in frames[0]:
        assert [e.kind for e in framer.feed(build_header(CONFIG))] == [Kind.START]
    assert framer.feed(frames) == []
    assert framer.drops.total == 1


def test_compressed_truncated_blob_passes_the_framer_but_not_array() -> None:
    frames = build_image(image(3), 0, compression="bslz4")
    truncated = [*frames[:2], frames[2][:-7], *frames[3:]]
    framer = EigerLegacyFramer()
    events = run(framer, [build_header(CONFIG), truncated])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA]
    packet = parse(events[1].data)
    assert isinstance(packet, EigerLegacyImage)
    with pytest.raises(ParseError, match="Eiger image 0"):
        packet.array()
    corrupt = bytearray(frames[2])
    corrupt[20:40] = b"\xff" * 20
    packet = parse(sd([*frames[:2], bytes(corrupt), *frames[3:]]))
    assert isinstance(packet, EigerLegacyImage)
    with pytest.raises(ParseError):
        packet.array()
    odd = parse(sd(replace_json(frames, 1, encoding="bs32-zstd<")))
    assert isinstance(odd, EigerLegacyImage)
    with pytest.raises(codecs.CodecUnavailable, match="unknown compression"):
        odd.array()


def test_scan_window_and_unknown_messages() -> None:
    framer = EigerLegacyFramer()
    events = run(
        framer,
        [
            build_image(image(), 0),
            build_header(CONFIG),
            [b'{"htype": "dfoo-1.0"}'],
            [],
            build_image(image(), 0),
            build_end(),
            build_image(image(), 1),
        ],
    )
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    assert framer.drops.counts == {
        "before the start message": 1,
        "unknown htype 'dfoo-1.0'": 1,
        "empty message": 1,
        "after the end message": 1,
    }
    with pytest.raises(ParseError, match="expected stream data of type EIGER_LEGACY"):
        parse(StreamData("STINS", build_end()))


def test_compat_facades() -> None:
    from tango_dranspose.compat.data import eiger_legacy as data
    from tango_dranspose.compat.middlewares import eiger_legacy as middleware

    assert middleware.parse is parse
    assert data.EigerLegacyImage is EigerLegacyImage
    packet = data.EigerLegacyPacket.validate_python({"htype": "dseries_end-1.0", "series": 1})
    assert isinstance(packet, EigerLegacyEnd)
    assert eiger_legacy.PROTOCOL.typ == "EIGER_LEGACY"
