"""Frames decode did not get from encode: crafted, foreign, truncated, mutated, pickled."""

from __future__ import annotations

import contextlib
import datetime as dt
import pickle
import random
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

from tango_dranspose.core import resultcodec
from tango_dranspose.core.resultcodec import (
    TAG_NDARRAY,
    TAG_NPSCALAR,
    ResultDecodeError,
    decode,
    encode,
)

from .resultcodec_samples import (
    ALLOWED,
    Point,
    Summary,
    header,
    wire,
)


def _array_frames() -> list[bytes]:
    return wire(encode({"a": np.arange(10, dtype=np.float64)}))


def test_wrong_buffer_length_is_refused() -> None:
    frames = _array_frames()
    with pytest.raises(ResultDecodeError, match="needs 80 bytes but frame 1 has 72"):
        decode([frames[0], frames[1][:-8]], ALLOWED)
    with pytest.raises(ResultDecodeError, match="needs 80 bytes"):
        decode([frames[0], frames[1] + b"\0"], ALLOWED)


@pytest.mark.parametrize(
    ("root", "n_buffers", "frames", "match"),
    [
        (None, 1, [], "announces 1 buffers"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "<f8", [2], False]), 1, [], "frame 1"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "f8", [2], False]), 1, [b"\0" * 16], "dtype"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "|a8", [2], False]), 1, [b"\0" * 16], "dtype"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "<T16", [2], False]), 1, [b"\0" * 32], "dtype"),
        (cbor2.CBORTag(TAG_NDARRAY, [2, "<f8", [2], False]), 1, [b"\0" * 16], "frame 2"),
        (cbor2.CBORTag(TAG_NDARRAY, [0, "<f8", [2], False]), 1, [b"\0" * 16], "frame 0"),
        ([cbor2.CBORTag(TAG_NDARRAY, [1, "<f8", [2], False])] * 2, 1, [b"\0" * 16], "twice"),
        ([], 1, [b"\0" * 16], "not referenced"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "|O8", [2], False]), 1, [b"\0" * 16], "object"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "|O", [2], False]), 1, [b"\0" * 16], "dtype"),
        (
            cbor2.CBORTag(
                TAG_NDARRAY,
                [
                    1,
                    {"names": ["a"], "formats": ["|O8"], "offsets": [0], "itemsize": 8},
                    [2],
                    False,
                ],
            ),
            1,
            [b"\0" * 16],
            "object",
        ),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "<f8", [-2], False]), 1, [b"\0" * 16], "shape"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "<f8", [2**62, 2**62], False]), 1, [b""], "bytes"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "<f8", [1] * 65, False]), 1, [b"\0" * 8], "dimensions"),
        (cbor2.CBORTag(TAG_NDARRAY, [1, "nonsense", [2], False]), 1, [b"\0" * 16], "dtype"),
        (cbor2.CBORTag(TAG_NPSCALAR, ["<f8", b"\0" * 4]), 0, [], "needs 8 bytes"),
        (cbor2.CBORTag(TAG_NPSCALAR, ["|O8", b"\0" * 8]), 0, [], "object"),
        (cbor2.CBORTag(99999, [1]), 0, [], "not ours"),
    ],
)
def test_crafted_headers_are_refused(
    root: Any, n_buffers: int, frames: list[bytes], match: str
) -> None:
    with pytest.raises(ResultDecodeError, match=match):
        decode([header(root, n_buffers), *frames], ALLOWED)


def test_every_foreign_cbor_tag_is_refused() -> None:
    ours = {v for k, v in vars(resultcodec).items() if k.startswith("TAG_")}
    values = [0, "2024-01-01T00:00:00Z", b"\x01\x02\x03\x04", [1, 2], {"a": 1}]
    for tag in [*range(0, 1100), 43000, 55799, 65535, 2**32, 2**64 - 1]:
        if tag in ours:
            continue
        for value in values:
            if tag in (2, 3) and type(value) is bytes:
                continue  # bignums are plain ints
            with pytest.raises(ResultDecodeError):
                decode([header(cbor2.CBORTag(tag, value))], ALLOWED)


def test_shared_references_are_refused() -> None:
    inner = [1, 2, 3]
    shared = cbor2.dumps([1, 0, [inner, inner]], value_sharing=True)
    with pytest.raises(ResultDecodeError):
        decode([shared], ALLOWED)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"garbage",
        b"\x83\x01\x00",
        b"\x9b" + (2**62).to_bytes(8, "big"),
        b"\x5b" + (2**62).to_bytes(8, "big"),
        b"\x81" * 5000 + b"\x00",
        cbor2.dumps([2, 0, None]),
        cbor2.dumps([True, 0, None]),
        cbor2.dumps({"v": 1}),
        cbor2.dumps([1, 0, None]) + b"trailing",
        bytes(random.Random(1).getrandbits(8) for _ in range(256)),
    ],
)
def test_garbage_headers_are_decode_errors(data: bytes) -> None:
    with pytest.raises(ResultDecodeError):
        decode([data], ALLOWED)


def test_truncated_and_mutated_headers_only_raise_decode_errors() -> None:
    value = {
        "p": Point(1, 2),
        "a": np.arange(6.0).reshape(2, 3),
        "t": (1, {2}, dt.date(2024, 1, 1)),
        "s": Summary(name="x", spectrum=np.zeros(2)),
    }
    frames = wire(encode(value))
    head = frames[0]
    for cut in range(len(head)):
        with pytest.raises(ResultDecodeError):
            decode([head[:cut], *frames[1:]], ALLOWED)
    rng = random.Random(1234)
    for _ in range(3000):
        mutated = bytearray(head)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        with contextlib.suppress(ResultDecodeError):
            decode([bytes(mutated), *frames[1:]], ALLOWED)


def test_non_buffer_frames_are_decode_errors() -> None:
    with pytest.raises(ResultDecodeError):
        decode(["not bytes"], ALLOWED)  # type: ignore[list-item]
    with pytest.raises(ResultDecodeError):
        decode([], ALLOWED)


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path(self.marker).touch, ())


def test_pickles_are_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        bomb = pickle.dumps({"result": _Boom(str(marker))}, protocol=protocol)
        with pytest.raises(ResultDecodeError):
            decode([bomb], ALLOWED)
        with pytest.raises(ResultDecodeError):
            decode([bomb, bomb], ALLOWED)
        with pytest.raises(ResultDecodeError):
            decode([header(None, 1), bomb], ALLOWED)
    assert not marker.exists()
    # The unrestricted loader would have run it: the check above is meaningful.
    pickle.loads(pickle.dumps(_Boom(str(marker))))
    assert marker.exists()
