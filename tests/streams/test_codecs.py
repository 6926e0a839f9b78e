from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.streams import codecs
from tango_dranspose.streams.base import ParseError

DTYPES = ["uint8", "uint16", "uint32", "int32", "float32", "float64", "uint64"]
COMPRESSIONS = ["none", "bslz4", "lz4", "lz4-h5"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 2047, 2048, 2049, 10_001])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(dtype: str, count: int, compression: str) -> None:
    array = np.random.default_rng(count).poisson(3.0, count).astype(dtype)
    blob = codecs.compress(array, compression, block_size=512 if compression == "lz4-h5" else 0)
    out = codecs.decompress(blob, compression, dtype, (count,))
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


def test_two_dimensional_and_shape_from_header() -> None:
    image = np.random.default_rng(1).poisson(2.0, (37, 53)).astype(np.uint32)
    for compression in ("bslz4", "lz4-h5", "none"):
        blob = codecs.compress(image, compression)
        np.testing.assert_array_equal(
            codecs.decompress(blob, compression, "uint32", image.shape), image
        )
        # The 12-byte header (or the buffer size) states the length when no shape is given.
        np.testing.assert_array_equal(
            codecs.decompress(blob, compression, "uint32"), image.reshape(-1)
        )


def test_bslz4_matches_the_bitshuffle_library() -> None:
    bitshuffle = pytest.importorskip("bitshuffle")
    image = np.random.default_rng(2).poisson(5.0, (64, 96)).astype(np.uint16)
    blob = codecs.compress(image, "bslz4")
    total, block_bytes = struct.unpack(">QI", blob[:12])
    assert total == image.nbytes
    assert block_bytes == codecs.default_block_size(2) * 2 == 8192
    theirs = bitshuffle.decompress_lz4(
        np.frombuffer(blob[12:], np.uint8), image.shape, image.dtype, block_bytes // 2
    )
    np.testing.assert_array_equal(theirs, image)
    # And the other way round: the library's own stream, with the HDF5-filter header.
    body = bitshuffle.compress_lz4(image, 256).tobytes()
    ours = codecs.decompress(
        struct.pack(">QI", image.nbytes, 512) + body, "bs16-lz4<", "uint16", image.shape
    )
    np.testing.assert_array_equal(ours, image)


@pytest.mark.parametrize("compression", ["bslz4", "lz4-h5", "lz4"])
def test_truncated_buffer_is_a_parse_error(compression: str) -> None:
    image = np.random.default_rng(3).poisson(50.0, (64, 64)).astype(np.uint32)
    blob = codecs.compress(image, compression, block_size=1024 if compression == "lz4-h5" else 0)
    with pytest.raises(ParseError):
        codecs.decompress(blob[: len(blob) // 2], compression, "uint32", image.shape)
    with pytest.raises(ParseError):
        codecs.decompress(blob[:5], compression, "uint32", image.shape)


def test_bslz4_errors_are_explicit() -> None:
    image = np.arange(1000, dtype=np.uint32)
    blob = codecs.compress(image, "bslz4")
    with pytest.raises(ParseError, match="truncated"):
        codecs.decompress(blob[:-10], "bslz4", "uint32", (1000,))
    with pytest.raises(ParseError, match="after its blocks"):
        codecs.decompress(blob + b"xx", "bslz4", "uint32", (1000,))
    with pytest.raises(ParseError, match="header says 4000 bytes"):
        codecs.decompress(blob, "bslz4", "uint32", (999,))
    with pytest.raises(ParseError, match="block size"):
        codecs.decompress(struct.pack(">QI", 4000, 3) + blob[12:], "bslz4", "uint32", (1000,))
    corrupt = bytearray(blob)
    corrupt[16:40] = b"\xff" * 24
    with pytest.raises(ParseError, match="corrupt lz4"):
        codecs.decompress(bytes(corrupt), "bslz4", "uint32", (1000,))


def test_raw_lz4_needs_a_shape() -> None:
    blob = codecs.compress(np.arange(10, dtype=np.uint16), "lz4<")
    with pytest.raises(ParseError, match="shape"):
        codecs.decompress(blob, "lz4<", "uint16")
    with pytest.raises(ParseError):
        codecs.decompress(blob, "lz4<", "uint16", (11,))


def test_uncompressed_view_is_zero_copy_and_checked() -> None:
    raw = np.arange(12, dtype=np.uint16).tobytes()
    view = codecs.decompress(raw, "none", "uint16", (3, 4))
    assert view.base is not None and not view.flags.writeable  # a view onto the frame
    assert view[2, 3] == 11
    with pytest.raises(ParseError, match="needs 26 bytes, the buffer has 24"):
        codecs.as_array(raw, "uint16", (13,))
    with pytest.raises(ParseError, match="not a numpy dtype"):
        codecs.as_array(raw, "uint17", (12,))
    with pytest.raises(ParseError, match="not a numeric dtype"):
        codecs.as_array(raw, "U2", (6,))
    with pytest.raises(ParseError, match="shape"):
        codecs.as_array(raw, "uint16", [3, -4])
    with pytest.raises(ParseError, match="shape"):
        codecs.parse_shape("12")


def test_names_and_unknown_compressions() -> None:
    assert codecs.normalize("bs32-lz4<") == "bslz4"
    assert codecs.normalize("<") == "none"
    assert codecs.normalize(None) == "none"
    assert codecs.normalize("LZ4<") == "lz4"
    assert codecs.is_uncompressed("none") and not codecs.is_uncompressed("bslz4")
    assert not codecs.is_uncompressed("zstd")
    with pytest.raises(codecs.CodecUnavailable, match="unknown compression 'zstd'"):
        codecs.decompress(b"", "zstd", "uint8", (0,))


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = codecs.compress(np.arange(64, dtype=np.uint32), "bslz4")
    monkeypatch.setitem(sys.modules, "bitshuffle", None)  # import now fails
    assert not codecs.available("bslz4")
    assert codecs.available("lz4")
    with pytest.raises(codecs.CodecUnavailable, match=r"pip install tango-dranspose\[codecs\]"):
        codecs.decompress(blob, "bslz4", "uint32", (64,))
    monkeypatch.setitem(sys.modules, "lz4.block", None)
    assert not codecs.available("lz4")
    with pytest.raises(codecs.CodecUnavailable, match="'lz4'"):
        codecs.decompress(b"\x00" * 16, "lz4-h5", "uint8")
    # CodecUnavailable is a ParseError: callers handling bad messages handle it too.
    assert issubclass(codecs.CodecUnavailable, ParseError)


def test_truncated_eiger_blob_from_the_capture(captures: Path) -> None:
    messages = list(read_raw_capture(captures / "eiger-small.cbors"))
    blob = messages[1][2]
    total, block_bytes = struct.unpack(">QI", blob[:12])
    assert (total, block_bytes) == (3108 * 3262 * 4, 8192)
    with pytest.raises(ParseError, match="truncated"):
        codecs.decompress(blob, "bs32-lz4<", "uint32", (3262, 3108))
