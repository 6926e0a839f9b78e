"""Results that survive encode -> decode, keeping types, order and zero copy."""

from __future__ import annotations

import collections
import datetime as dt
import io
import math
from typing import Any

import cbor2
import numpy as np
import pytest

from tango_dranspose.core.resultcodec import (
    TAG_NDARRAY,
    decode,
    encode,
)

from .resultcodec_samples import (
    ALLOWED,
    ARRAYS,
    Doubling,
    Frozen,
    Holder,
    Mode,
    Pixel,
    Point,
    Summary,
    round_trip,
    wire,
)

# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -17,
        2**64,
        -(2**70) + 3,
        10**100,
        1.5,
        float("inf"),
        -0.0,
        "text ünïcode",
        "",
        b"\x00\xffbytes",
        bytearray(b"mutable"),
        1 + 2j,
        complex(0, -1.5),
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
        dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.date(2024, 2, 29),
        dt.time(13, 14, 15, 16),
        dt.timedelta(days=-3, seconds=5, microseconds=7),
        (),
        (1, "a", (2.5, None)),
        [],
        {},
        {1, 2, 3},
        frozenset({"a", "b"}),
        set(),
    ],
    ids=repr,
)
def test_scalars_and_containers_round_trip(value: Any) -> None:
    back = round_trip(value)
    assert type(back) is type(value)
    assert back == value


def test_nan_round_trips() -> None:
    assert math.isnan(round_trip(float("nan")))


def test_nested_containers_keep_their_types() -> None:
    value = {
        "list": [1, (2, 3), [4, {"deep": (5, [6])}]],
        "tuple": ((1, 2), [3]),
        "sets": [{1, 2}, frozenset({(1, 2)})],
        1: "int key",
        2.5: "float key",
        None: "none key",
        False: "bool key",
        (1, ("nested", 2)): "tuple key",
        frozenset({1}): "frozenset key",
        b"raw": "bytes key",
    }
    back = round_trip(value)
    assert back == value
    assert list(back) == list(value)
    assert type(back["list"][1]) is tuple and type(back["list"][2]) is list
    assert type(back["tuple"][1]) is list
    assert type(back["sets"][1]) is frozenset
    assert all(type(a) is type(b) for a, b in zip(back, value, strict=True))


def test_subclasses_arrive_as_their_base_type() -> None:
    pair = collections.namedtuple("pair", "a b")
    value = {
        "od": collections.OrderedDict(b=1, a=2),
        "dd": collections.defaultdict(list, x=[1]),
        "nt": pair(1, 2),
        "mode": Mode.SLOW,
    }
    back = round_trip(value)
    assert back == {"od": {"b": 1, "a": 2}, "dd": {"x": [1]}, "nt": (1, 2), "mode": 2}
    assert type(back["od"]) is dict and type(back["nt"]) is tuple and type(back["mode"]) is int


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_round_trip(name: str) -> None:
    arr = ARRAYS[name]
    back = round_trip({"a": arr})["a"]
    assert type(back) is np.ndarray
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    if arr.dtype.names is None:
        assert np.array_equal(back, arr, equal_nan=arr.dtype.kind in "fc")
    else:
        assert back.tobytes() == arr.tobytes()


def test_fortran_order_is_kept() -> None:
    arr = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    back = round_trip(arr)
    assert back.flags.f_contiguous and not back.flags.c_contiguous
    assert np.array_equal(back, arr)


@pytest.mark.parametrize(
    "scalar",
    [
        np.float64(1.25),
        np.float32(-2.5),
        np.float16(0.5),
        np.int8(-3),
        np.uint64(2**64 - 1),
        np.int64(-(2**63)),
        np.bool_(True),
        np.complex64(1 - 1j),
        np.datetime64("2024-01-02T03:04:05", "ns"),
        np.timedelta64(5, "ms"),
        np.str_("unicode"),
        np.bytes_(b"raw"),
    ],
    ids=repr,
)
def test_numpy_scalars_round_trip(scalar: np.generic) -> None:
    back = round_trip(scalar)
    assert type(back) is type(scalar)
    assert back.dtype == scalar.dtype
    assert back == scalar


def test_numpy_scalar_dict_keys() -> None:
    value = {np.int64(3): "a", np.float32(1.5): "b"}
    back = round_trip(value)
    assert back == value
    assert [type(k) for k in back] == [np.int64, np.float32]


def test_dataclass_round_trip_keeps_init_false_fields() -> None:
    p = Point(3.0, 4.0, "p")
    p.norm = 99.0  # changed after __post_init__: the worker's state, not a recomputation, arrives
    back = round_trip(p)
    assert type(back) is Point
    assert (back.x, back.y, back.label, back.norm) == (3.0, 4.0, "p", 99.0)


def test_frozen_slotted_dataclass_round_trip() -> None:
    f = Frozen("det", (512, 1024))
    object.__setattr__(f, "cached", 42)
    back = round_trip(f)
    assert back == f and back.cached == 42 and type(back.shape) is tuple


def test_nested_dataclass_inside_dict_inside_list() -> None:
    value = [
        {"holder": Holder([Point(1, 2), Point(0, 1, "b")], np.eye(3), {"k": (Point(5, 5),)})},
        "tail",
    ]
    back = round_trip(value)
    holder = back[0]["holder"]
    assert type(holder) is Holder
    assert holder.points == [Point(1, 2), Point(0, 1, "b")]
    assert np.array_equal(holder.image, np.eye(3))
    assert holder.extra == {"k": (Point(5, 5),)}
    assert back[1] == "tail"


def test_pydantic_model_round_trip() -> None:
    model = Summary(
        name="roi", counts=[1, 2], spectrum=np.arange(8.0), where=Pixel(1, 1), Gain=2.0, note="x"
    )
    back = round_trip({"summary": model})["summary"]
    assert type(back) is Summary
    assert back.name == "roi" and back.counts == [1, 2] and back.gain == 2.0
    assert np.array_equal(back.spectrum, np.arange(8.0))
    assert back.where == Pixel(1, 1)
    assert back.model_extra == {"note": "x"}
    assert back.model_fields_set == model.model_fields_set


def test_pydantic_validators_do_not_run_again() -> None:
    model = Doubling(value=4)
    assert model.value == 8
    assert round_trip(model).value == 8  # model_construct: no second doubling


def test_large_array_frames() -> None:
    arr = np.random.default_rng(0).random((512, 512))
    frames = encode({"img": arr, "n": 1})
    assert len(frames) == 2 and isinstance(frames[0], bytes)
    assert memoryview(frames[1]).nbytes == arr.nbytes
    assert np.array_equal(decode(wire(frames), ALLOWED)["img"], arr)


# ---------------------------------------------------------------------------------------------
# zero copy


def test_encode_does_not_copy_contiguous_arrays() -> None:
    c = np.arange(1000.0).reshape(10, 100)
    f = np.asfortranarray(c)
    frames = encode([c, f])
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), c)
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), f)


def test_non_contiguous_arrays_are_copied_once() -> None:
    base = np.arange(100.0).reshape(10, 10)
    frames = encode(base[::2, ::2])
    assert memoryview(frames[1]).nbytes == 25 * 8
    assert not np.shares_memory(np.frombuffer(frames[1], np.uint8), base)


def test_decoded_arrays_are_views_of_received_frames() -> None:
    arr = np.asfortranarray(np.arange(64, dtype=np.uint32).reshape(8, 8))
    received = wire(encode({"a": arr, "b": np.zeros(3)}))
    back = decode(received, ALLOWED)
    assert np.shares_memory(back["a"], np.frombuffer(received[1], np.uint8))
    assert np.shares_memory(back["b"], np.frombuffer(received[2], np.uint8))
    assert not back["a"].flags.writeable  # views of immutable bytes: documented read-only


def test_frames_with_buffer_attribute_are_accepted() -> None:
    class FakeZmqFrame:
        def __init__(self, data: bytes) -> None:
            self.buffer = memoryview(data)

    arr = np.arange(10.0)
    received = [FakeZmqFrame(f) for f in wire(encode(arr))]
    back = decode(received, ALLOWED)
    assert np.array_equal(back, arr)
    assert np.shares_memory(back, np.frombuffer(received[1].buffer, np.uint8))


# ---------------------------------------------------------------------------------------------
# wire format


def test_header_is_plain_cbor() -> None:
    frames = encode({"x": 1.5, "arr": np.zeros((2, 3), dtype="<u2")})
    doc = cbor2.CBORDecoder(io.BytesIO(frames[0])).decode()
    assert doc[0] == 1 and doc[1] == 1
    tag = doc[2]["arr"]
    assert tag.tag == TAG_NDARRAY and list(tag.value) == [1, "<u2", (2, 3), False]
