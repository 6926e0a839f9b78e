"""Hostile input the fuzzer found (or could find) once per protocol: each is a ParseError or
a counted drop, never another exception and never a large allocation."""

from __future__ import annotations

import json
import pickle
import struct
import tracemalloc
from collections.abc import Iterator

import cbor2
import numpy as np
import pytest

from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import (
    codecs,
    dectris_stream2,
    eiger_legacy,
    lecroy,
    pcap,
    positioncap,
    stream1,
)
from tango_dranspose.streams.base import Kind, ParseError


@pytest.fixture
def small_memory() -> Iterator[None]:
    """Fails the test if it allocated more than 16 MiB at once."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"allocated {peak >> 20} MiB"


# -- codecs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [3, 1.5, ["bslz4"], {"a": 1}, b"none"])
def test_a_compression_that_is_not_text(compression: object) -> None:
    assert not codecs.is_uncompressed(compression)  # type: ignore[arg-type]
    with pytest.raises(codecs.CodecUnavailable, match="unknown compression"):
        codecs.normalize(compression)  # type: ignore[arg-type]


def test_none_compression_means_uncompressed() -> None:
    assert codecs.is_uncompressed(None) and codecs.normalize(None) == "none"


@pytest.mark.parametrize("name", [",n^t16", "(2,)u1,", "f8,i4" * 50, "V", "U", 7])
def test_dtype_names_numpy_chokes_on(name: object) -> None:
    with pytest.raises(ParseError):
        codecs.parse_dtype(name)


@pytest.mark.parametrize(
    "shape",
    [[1] * 33, [2**40, 2**40], [0, 2**70], [-1], [True, 2], "12", [1.5]],
)
def test_shapes_numpy_cannot_hold(shape: object) -> None:
    with pytest.raises(ParseError, match="shape"):
        codecs.as_array(b"", "uint8", shape)  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", ["bslz4", "lz4-h5"])
def test_a_header_declaring_a_terabyte(compression: str, small_memory: None) -> None:
    blob = struct.pack(">QI", 2**40, 8192) + b"\x00" * 20
    with pytest.raises(ParseError, match="truncated or corrupt"):
        codecs.decompress(blob, compression, "uint32")


def test_a_raw_lz4_block_for_a_huge_shape(small_memory: None) -> None:
    with pytest.raises(ParseError, match="truncated or corrupt"):
        codecs.decompress(b"\x00" * 16, "lz4", "uint32", (65536, 65536))


def test_the_ratio_limit_leaves_real_compression_alone() -> None:
    zeros = np.zeros((512, 512), np.uint32)  # compresses about as far as lz4 goes
    for compression in ("bslz4", "lz4-h5", "lz4"):
        blob = codecs.compress(zeros, compression)
        np.testing.assert_array_equal(
            codecs.decompress(blob, compression, "uint32", (512, 512)), zeros
        )


# -- per protocol ----------------------------------------------------------------------------


def test_eiger_image_with_a_numeric_encoding() -> None:
    image = np.zeros((4, 4), np.uint16)
    parts = eiger_legacy.build_image(image, 0, compression="none")
    info = json.loads(parts[1])
    info["encoding"] = 12
    parts[1] = json.dumps(info).encode()
    framer = eiger_legacy.EigerLegacyFramer()
    framer.feed(eiger_legacy.build_header({}, header_detail="none"))
    assert framer.feed(parts) == []
    assert framer.drops.counts == {"invalid dimage-1.0 message": 1}
    assert "encoding must be a string" in framer.drops.samples["invalid dimage-1.0 message"]


def test_stins_header_nested_a_hundred_thousand_deep() -> None:
    head = b'{"htype": "header", "filename": "", "msg_number": 0, "x": ' + b"[" * 100_000
    framer = stream1.Stream1Framer()
    assert framer.feed([head + b"]" * 100_000 + b"}"]) == []
    assert framer.drops.counts == {"first frame is not a JSON object": 1}


def test_stins_compressed_image_declaring_more_than_it_holds(small_memory: None) -> None:
    head = {"htype": "image", "frame": 0, "shape": [65536, 65536], "type": "uint32"}
    head |= {"compression": "bslz4", "msg_number": 1}
    blob = struct.pack(">QI", 65536 * 65536 * 4, 8192) + b"\x00" * 64
    with pytest.raises(ParseError, match="truncated or corrupt"):
        stream1.parse(StreamData("STINS", [json.dumps(head).encode(), blob]))


def test_lecroy_timestamps_beyond_float() -> None:
    parts = lecroy.build_trace(2, np.zeros((1, 8)), 0, 0.0, [0.0])
    parts[2] = pickle.dumps([10**400])
    with pytest.raises(ParseError, match="real numbers"):
        lecroy.parse_trace(parts)
    framer = lecroy.LecroyFramer()
    framer.feed(lecroy.build_prepare())
    assert framer.feed(parts) == []
    assert framer.drops.counts == {"invalid trace message": 1}


def test_position_capture_end_with_too_many_digits() -> None:
    framer = positioncap.PositionCapFramer()
    arm = positioncap.build_arm(positioncap.rotation_rows(2))
    end = arm.rindex(b"END")
    events = framer.feed([arm[:end] + b"END " + b"9" * 5000 + b" Disarmed\n"])
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA]
    assert framer.drops.counts == {"malformed END line": 1}
    with pytest.raises(ParseError, match="impossible sample count"):
        positioncap.parse_end("END " + "9" * 5000 + " Disarmed")


def test_pcap_message_that_would_multiply_into_millions_of_values() -> None:
    scalars = {f"s{i}": i for i in range(2000)}
    message = {**json.loads(pcap.build_data(0, {"x": [0] * 1000})[0]), **scalars}
    framer = pcap.PCAPFramer()
    framer.feed(pcap.build_start())
    assert framer.feed([json.dumps(message).encode()]) == []
    assert framer.drops.counts == {"data message too large to split into rows": 1}
    # A real-sized message still splits.
    assert len(framer.feed(pcap.build_data(0, {"x": [1.0] * 15, "y": [2.0] * 15}))) == 15


def shared_reference_bomb(levels: int = 40) -> bytes:
    """A stream v2 image whose user_data shares values (CBOR tags 28/29): each level a pair
    of references to the one below, 2**40 paths in 450 bytes."""
    items = [cbor2.CBORTag(28, [])]
    for level in range(1, levels):
        pair = [cbor2.CBORTag(29, level - 1), cbor2.CBORTag(29, level - 1)]
        items.append(cbor2.CBORTag(28, pair))
    fields = {"type": "image", "series_id": 1, "image_id": 0, "data": {}, "user_data": items}
    return cbor2.dumps(cbor2.CBORTag(dectris_stream2.TAG_SELF_DESCRIBE, fields))


@pytest.mark.timeout(10)
def test_stream2_value_sharing_is_refused() -> None:
    bomb = shared_reference_bomb()
    framer = dectris_stream2.DectrisStream2Framer()
    framer.feed(dectris_stream2.build_start())
    assert framer.feed([bomb]) == []
    assert "value sharing (tag 28)" in framer.drops.samples["invalid CBOR message"]
    with pytest.raises(ParseError, match="value sharing"):
        dectris_stream2.parse(StreamData(dectris_stream2.TYP, [bomb]))
