from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import cbor2
import numpy as np
import pytest

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import codecs, dectris_cbor, dectris_stream2
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.dectris_stream2 import (
    DectrisEnd,
    DectrisImage,
    DectrisStart,
    DectrisStream2Framer,
    build_end,
    build_image,
    build_start,
    encode_array,
    parse,
    peek,
)

ARM = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def run(framer: DectrisStream2Framer, messages: Iterable[Sequence[Any]]) -> list[Framed]:
    out: list[Framed] = []
    for message in messages:
        out += framer.feed(message)
    return out + framer.flush()


def sd(frames: Sequence[Any]) -> StreamData:
    return StreamData("DECTRIS_STREAM2", list(frames))


def image(seed: int = 0, dtype: str = "uint32", shape: tuple[int, int] = (30, 50)) -> np.ndarray:
    return np.random.default_rng(seed).poisson(3.0, shape).astype(dtype)


def message(fields: dict[str, Any]) -> list[bytes]:
    return [cbor2.dumps(cbor2.CBORTag(55799, fields))]


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32", "int32"])
def test_image_round_trip(compression: str, dtype: str) -> None:
    channels = {"threshold_1": image(1, dtype), "threshold_2": image(2, dtype)}
    packet = parse(sd(build_image(channels, image_id=4, series_id=9, compression=compression)))
    assert isinstance(packet, DectrisImage)
    assert (packet.image_id, packet.series_id, packet.series_unique_id) == (4, 9, "series-9")
    assert set(packet.data) == {"threshold_1", "threshold_2"}
    for name, original in channels.items():
        assert packet.data[name].shape == (30, 50) and packet.data[name].dtype == original.dtype
        np.testing.assert_array_equal(packet.data[name], original)
    assert packet.real_time == [100_000, 10_000_000]
    assert dectris_stream2.rational_seconds(packet.real_time) == pytest.approx(0.01)
    assert isinstance(packet.series_date, datetime)


def test_start_and_end_round_trip() -> None:
    flat = {"threshold_1": np.ones((30, 50), np.float32)}
    mask = {"threshold_1": np.zeros((30, 50), np.uint32)}
    frames = build_start(
        series_id=3,
        image_size=(30, 50),
        number_of_images=5,
        arm_date=ARM,
        flatfield=flat,
        pixel_mask=mask,
        compression="bslz4",
        user_data={"sample": "LaB6"},
        count_time=0.01,
    )
    start = parse(sd(frames))
    assert isinstance(start, DectrisStart)
    assert (start.series_id, start.number_of_images) == (3, 5)
    assert (start.image_size_x, start.image_size_y) == (50, 30)
    assert start.arm_date == ARM and start.channels == ["threshold_1"]
    np.testing.assert_array_equal(start.flatfield["threshold_1"], flat["threshold_1"])
    assert start.pixel_mask["threshold_1"].dtype == np.uint32
    assert start.user_data == {"sample": "LaB6"}
    assert start.count_time == 0.01  # type: ignore[attr-defined]
    end = parse(sd(build_end(3, "abc")))
    assert isinstance(end, DectrisEnd) and (end.series_id, end.series_unique_id) == (3, "abc")


def test_encoder_follows_the_spec() -> None:
    original = image(3, "uint16")
    (frame,) = build_image(original, image_id=0, compression="bslz4")
    assert frame[:3] == b"\xd9\xd9\xf7"  # self-described CBOR
    raw = cbor2.loads(frame)  # without our hooks: the tags as sent
    assert next(iter(raw)) == "type"
    multi = raw["data"]["threshold_1"]
    assert isinstance(multi, cbor2.CBORTag) and multi.tag == 40
    dims, typed = multi.value
    assert list(dims) == [30, 50]
    assert typed.tag == 69  # uint16, little endian
    compressed = typed.value
    assert compressed.tag == 56500
    algorithm, elem_size, blob = compressed.value
    assert (algorithm, elem_size) == ("bslz4", 2)
    assert struct.unpack(">Q", blob[:8])[0] == original.nbytes
    lz4 = encode_array(original, "lz4").value[1].value
    assert lz4.tag == 56500 and list(lz4.value[:2]) == ["lz4", 0]


def test_decoder_on_a_hand_built_message() -> None:
    """Built from the spec with the codec libraries directly, not with our encoder."""
    bitshuffle = pytest.importorskip("bitshuffle")
    original = image(4, "uint32", (8, 16))
    body = bitshuffle.compress_lz4(original, 64).tobytes()
    blob = struct.pack(">QI", original.nbytes, 64 * 4) + body
    big_endian = np.arange(6, dtype=">u2").reshape(2, 3)
    fields = {
        "type": "image",
        "series_id": 1,
        "series_unique_id": "u",
        "image_id": 0,
        "real_time": [1, 2],
        "data": {
            "threshold_1": cbor2.CBORTag(
                40, [[8, 16], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 4, blob]))]
            ),
            "big_endian": cbor2.CBORTag(40, [[2, 3], cbor2.CBORTag(65, big_endian.tobytes())]),
            "column_major": cbor2.CBORTag(
                1040, [[2, 3], cbor2.CBORTag(64, bytes([1, 2, 3, 4, 5, 6]))]
            ),
        },
    }
    packet = parse(sd(message(fields)))
    assert isinstance(packet, DectrisImage)
    np.testing.assert_array_equal(packet.data["threshold_1"], original)
    np.testing.assert_array_equal(packet.data["big_endian"], big_endian)
    np.testing.assert_array_equal(packet.data["column_major"], [[1, 3, 5], [2, 4, 6]])


def test_tag_hook_accepts_both_cbor2_conventions() -> None:
    tag = cbor2.CBORTag(69, b"\x01\x00\x02\x00")
    for args in ((tag, True), (object(), tag)):  # cbor2 6.x, then 5.x
        np.testing.assert_array_equal(dectris_cbor._tag_hook(*args), [1, 2])


def test_peek_reads_without_decoding() -> None:
    (frame,) = build_image(image(), image_id=12, series_id=4)
    assert peek(frame) == {"type": "image", "series_id": 4, "image_id": 12}
    assert peek(build_end(4)[0])["type"] == "end"
    indefinite = b"\xbf" + cbor2.dumps("type")[0:] + cbor2.dumps("start") + b"\xff"
    assert peek(indefinite) == {"type": "start"}


# -- framer ---------------------------------------------------------------------------------


def test_series_through_the_framer() -> None:
    framer = DectrisStream2Framer()
    messages = [
        build_image(image(), 0, series_id=1),  # before the start
        build_start(series_id=2, image_size=(30, 50)),
        build_image(image(), 0, series_id=2),
        build_image(image(), 0, series_id=1),  # a stale image of another series
        build_image(image(), 1, series_id=2),
        build_end(2),
        build_image(image(), 2, series_id=2),  # after the end
    ]
    events = run(framer, messages)
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert all(e.data.length == 1 for e in events)
    assert framer.drops.counts == {
        "before the start message": 1,
        "image of another series than the running one": 1,
        "after the end message": 1,
    }
    assert [parse(e.data).type for e in events] == ["start", "image", "image", "end"]
    assert DectrisStream2Framer.detect(messages[1]) and not DectrisStream2Framer.detect(messages[2])


def test_framer_drops_malformed_messages() -> None:
    (frame,) = build_image(image(), 0)
    framer = DectrisStream2Framer()
    framer.feed(build_start())
    bad = [
        [frame[:-9]],  # truncated
        [frame + b"\x00"],  # trailing bytes
        [frame, frame],  # two frames
        [b"\xff\x00"],  # not CBOR
        [cbor2.dumps([1, 2])],  # not a map
        message({"type": "status"}),
    ]
    for item in bad:
        assert framer.feed(item) == []
    assert framer.drops.counts == {
        "invalid CBOR message": 4,
        "message with 2 frames; stream v2 sends 1": 1,
        "unknown message type 'status'": 1,
    }
    assert "truncated" in framer.drops.samples["invalid CBOR message"]


# -- parse errors ---------------------------------------------------------------------------


def image_fields(data: Any) -> dict[str, Any]:
    return {"type": "image", "series_id": 1, "image_id": 0, "data": {"threshold_1": data}}


def test_parse_errors() -> None:
    (frame,) = build_image(image(), 0)
    with pytest.raises(ParseError, match="truncated"):
        parse(sd([frame[: len(frame) // 2]]))
    with pytest.raises(ParseError, match="must be a CBOR map"):
        parse(sd([cbor2.dumps([1])]))
    with pytest.raises(ParseError, match="image_id"):
        parse(sd(message({"type": "image", "series_id": 1, "data": {}})))
    with pytest.raises(ParseError, match="has 1 frame"):
        parse(sd([frame, frame]))
    with pytest.raises(ParseError, match="expected stream data of type DECTRIS_STREAM2"):
        parse(StreamData("STINS", [frame]))

    blob = codecs.compress(np.arange(16, dtype=np.uint32), "bslz4")
    wrong_elem = cbor2.CBORTag(
        40, [[4, 4], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 2, blob]))]
    )
    with pytest.raises(ParseError, match="element size 2"):
        parse(sd(message(image_fields(wrong_elem))))
    corrupt = blob[:20] + b"\xff" * (len(blob) - 20)
    bad_data = cbor2.CBORTag(
        40, [[4, 4], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 4, corrupt]))]
    )
    with pytest.raises(ParseError):
        parse(sd(message(image_fields(bad_data))))
    zstd = cbor2.CBORTag(40, [[4, 4], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["zstd", 0, b""]))])
    with pytest.raises(codecs.CodecUnavailable, match="zstd"):
        parse(sd(message(image_fields(zstd))))
    wrong_dims = cbor2.CBORTag(40, [[3, 3], cbor2.CBORTag(64, b"12345678")])
    with pytest.raises(ParseError, match="need 9 elements, got 8"):
        parse(sd(message(image_fields(wrong_dims))))
    odd_bytes = cbor2.CBORTag(40, [[1, 1], cbor2.CBORTag(70, b"123")])
    with pytest.raises(ParseError, match="not a whole number"):
        parse(sd(message(image_fields(odd_bytes))))
    reserved = cbor2.CBORTag(40, [[1, 1], cbor2.CBORTag(76, b"1")])
    with pytest.raises(ParseError, match="tag 76"):
        parse(sd(message(image_fields(reserved))))
    with pytest.raises(ParseError, match=r"\[algorithm, elem_size, bytes\]"):
        parse(sd(message(image_fields(cbor2.CBORTag(56500, ["bslz4", 4])))))


def test_compat_facades() -> None:
    from tango_dranspose.compat.data import dectris_stream2 as data
    from tango_dranspose.compat.middlewares import dectris_stream2 as middleware

    assert middleware.parse is parse
    assert data.DectrisImage is DectrisImage and data.DectrisStart is DectrisStart
    assert dectris_stream2.PROTOCOL.typ == "DECTRIS_STREAM2"
    assert dectris_stream2.PROTOCOL.framer is DectrisStream2Framer
