from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import enum
import io
import math
import pickle
import random
import sys
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tango_dranspose.core import resultcodec
from tango_dranspose.core.resultcodec import (
    TAG_DATACLASS,
    TAG_MODEL,
    TAG_NDARRAY,
    TAG_NPSCALAR,
    ClassAllowList,
    ResultDecodeError,
    ResultEncodeError,
    allow_list_for,
    decode,
    encode,
)

# The test module plays the payload package: its top-level package ("tests") is allowed.
ALLOWED = allow_list_for(f"{__name__}:Point")


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: str = ""
    norm: float = dataclasses.field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.norm = math.hypot(self.x, self.y)


@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    name: str
    shape: tuple[int, ...]
    cached: int = dataclasses.field(init=False, default=-1)


@dataclasses.dataclass
class Pixel:
    x: int
    y: int


@dataclasses.dataclass
class Holder:
    points: list[Point]
    image: np.ndarray
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class Summary(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow")

    name: str
    counts: list[int] = []
    spectrum: np.ndarray
    where: Pixel | None = None
    gain: float = Field(default=1.0, alias="Gain")


class Doubling(BaseModel):
    value: int

    @field_validator("value")
    @classmethod
    def _double(cls, v: int) -> int:
        return 2 * v


class Mode(enum.IntEnum):
    FAST = 1
    SLOW = 2


def helper_function() -> None:
    """Not a class: naming it in a message must be refused."""


def wire(frames: list[Any]) -> list[bytes]:
    """What the reducer receives: separate immutable buffers."""
    return [bytes(f) for f in frames]


def round_trip(obj: Any) -> Any:
    return decode(wire(encode(obj)), ALLOWED)


def header(root: Any, n_buffers: int = 0) -> bytes:
    return cbor2.dumps([1, n_buffers, root])


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


ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "c_2d": np.arange(12, dtype=np.float64).reshape(3, 4),
    "fortran_2d": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "fortran_3d": np.asfortranarray(np.arange(60, dtype=np.uint16).reshape(3, 4, 5)),
    "noncontig_slice": np.arange(100, dtype=np.float32).reshape(10, 10)[::3, 1::2],
    "transposed_view": np.arange(24, dtype=np.int64).reshape(2, 3, 4).transpose(1, 0, 2),
    "negative_stride": np.arange(10, dtype=np.int16)[::-1],
    "bool": np.array([[True, False], [False, True]]),
    "complex128": np.array([1 + 2j, -3.5j]),
    "complex64": np.array([[1 + 1j]], dtype=np.complex64),
    "zero_d": np.array(3.25),
    "zero_d_int": np.array(7, dtype=np.uint8),
    "empty": np.zeros((0, 5), dtype=np.float64),
    "big_endian": np.arange(5, dtype=">i4"),
    "float16": np.linspace(0, 1, 7, dtype=np.float16),
    "datetime64": np.array(["2024-01-01T00:00:00", "2024-06-01T12:00:00"], dtype="M8[us]"),
    "timedelta64": np.array([1, 2, 3], dtype="m8[s]"),
    "unicode": np.array(["ab", "cde"]),
    "bytes": np.array([b"x", b"yz"]),
    "structured": np.array(
        [(1, (2.0, 3.0), b"a"), (4, (5.0, 6.0), b"b")],
        dtype=[("i", "<i4"), ("v", "<f8", (2,)), ("s", "S1")],
    ),
    "aligned_struct": np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "<f8")], align=True)),
}


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
# refusals at encode


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        ({"a": [1, 2, 3, Opaque()]}, "Opaque", "result['a'][3]"),
        ({"f": lambda: 1}, "function", "result['f']"),
        ([0, (1, (i for i in range(3)))], "generator", "result[1][1]"),
        ({"pts": [Point(1, 2), Holder([Point(1, 1)], np.zeros(1), {"x": print})]}, "builtin", ""),
        ({"s": {1, Opaque()}}, "Opaque", "result['s']<set element"),
        ({"k": {Opaque(): 1}}, "Opaque", "result['k']<key"),
        (Summary(name="n", spectrum=np.zeros(1), extra_thing=Opaque()), "Opaque", ".extra_thing"),
        ({"m": np.ma.masked_array([1, 2], mask=[False, True])}, "MaskedArray", "result['m']"),
        ({"d": dt.datetime.now().astimezone().tzinfo}, "timezone", "result['d']"),
    ],
)
def test_unknown_types_are_refused_with_their_path(value: Any, type_name: str, path: str) -> None:
    with pytest.raises(ResultEncodeError) as info:
        encode(value)
    message = str(info.value)
    assert type_name in message
    assert path in message


def test_dataclass_field_path() -> None:
    value = {"pts": [Point(1, 2), Holder([Point(1, 1)], np.zeros(1), {"x": print})]}
    with pytest.raises(ResultEncodeError, match=r"at result\['pts'\]\[1\]\.extra\['x'\]"):
        encode(value)


def test_open_file_is_refused() -> None:
    with open(__file__) as fh, pytest.raises(ResultEncodeError, match=r"TextIOWrapper at result"):
        encode({"a": [1, 2, 3, fh]})


def test_object_dtype_is_refused_at_encode() -> None:
    arr = np.array([1, "a", None], dtype=object)
    with pytest.raises(ResultEncodeError, match=r"result\['data'\]\[0\].*object"):
        encode({"data": [arr]})
    with pytest.raises(ResultEncodeError, match="object"):
        encode(np.zeros(2, dtype=[("a", "O"), ("b", "f8")]))


def test_local_classes_are_refused_at_encode() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(ResultEncodeError, match="module level"):
        encode(Local(1))


def test_self_containing_result_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ResultEncodeError, match="contains itself"):
        encode(loop)


# ---------------------------------------------------------------------------------------------
# refusals at decode


def test_class_outside_allow_list_is_refused() -> None:
    frames = wire(encode([Point(1, 2)]))
    with pytest.raises(ResultDecodeError, match=rf"{__name__}:Point.*outside"):
        decode(frames, ClassAllowList(("someone_else.",)))


def test_allow_list_prefixes_match_whole_package_names() -> None:
    allowed = ClassAllowList(("pkg",))
    assert allowed.prefixes == ("pkg.",)
    assert allowed.allows("pkg") and allowed.allows("pkg.sub.mod")
    assert not allowed.allows("pkg_other") and not allowed.allows("other.pkg")
    with pytest.raises(ValueError):
        ClassAllowList(("",))
    lst = allow_list_for("beamline_x.payloads.roi:RoiWorker", "beamline_x.red:R", "solo:W")
    assert lst.prefixes == ("beamline_x.", "solo.", "tango_dranspose.")


@pytest.mark.parametrize("name", ["os:system", "posix:system", "builtins:eval", "subprocess:Popen"])
def test_functions_and_foreign_classes_are_refused(name: str) -> None:
    frames = [header(cbor2.CBORTag(TAG_DATACLASS, [name, {"command": "echo pwned"}]))]
    with pytest.raises(ResultDecodeError, match=name):
        decode(frames, ALLOWED)
    # Even when their package is allowed, they are not dataclasses / pydantic models.
    top = name.split(":")[0]
    with pytest.raises(ResultDecodeError, match="not a dataclass"):
        decode(frames, ClassAllowList((top,)))
    model = [header(cbor2.CBORTag(TAG_MODEL, [name, {}, None, []]))]
    with pytest.raises(ResultDecodeError, match="not a dataclass"):
        decode(model, ClassAllowList((top,)))


@pytest.mark.parametrize(
    "qualname", ["helper_function", "Point.__init__", "ARRAYS", "BaseModel", "Nope", "Point.x"]
)
def test_names_in_allowed_module_that_are_not_its_classes(qualname: str) -> None:
    frames = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{__name__}:{qualname}", {}]))]
    with pytest.raises(ResultDecodeError, match="refusing to rebuild"):
        decode(frames, ALLOWED)


def test_model_tag_must_name_a_model_and_dataclass_tag_a_dataclass() -> None:
    as_model = [header(cbor2.CBORTag(TAG_MODEL, [f"{__name__}:Point", {}, None, []]))]
    with pytest.raises(ResultDecodeError, match="not a pydantic model"):
        decode(as_model, ALLOWED)
    as_dc = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{__name__}:Summary", {}]))]
    with pytest.raises(ResultDecodeError, match="not a dataclass"):
        decode(as_dc, ALLOWED)


def test_module_not_imported_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    pkg = tmp_path / "rc_sideeffect_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "evil.py").write_text(
        "import dataclasses, pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "@dataclasses.dataclass\nclass Thing:\n    x: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    frames = [header(cbor2.CBORTag(TAG_DATACLASS, ["rc_sideeffect_pkg.evil:Thing", {}]))]
    with pytest.raises(ResultDecodeError, match="not imported"):
        decode(frames, ClassAllowList(("rc_sideeffect_pkg.",)))
    assert not marker.exists()
    assert "rc_sideeffect_pkg.evil" not in sys.modules


def test_unknown_fields_and_failing_constructors_are_decode_errors() -> None:
    unknown = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{__name__}:Point", {"x": 1, "z": 2}]))]
    with pytest.raises(ResultDecodeError, match="no fields"):
        decode(unknown, ALLOWED)
    missing = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{__name__}:Point", {"x": 1}]))]
    with pytest.raises(ResultDecodeError, match=r"rebuilding .*Point failed"):
        decode(missing, ALLOWED)


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


def test_header_is_plain_cbor() -> None:
    frames = encode({"x": 1.5, "arr": np.zeros((2, 3), dtype="<u2")})
    doc = cbor2.CBORDecoder(io.BytesIO(frames[0])).decode()
    assert doc[0] == 1 and doc[1] == 1
    tag = doc[2]["arr"]
    assert tag.tag == TAG_NDARRAY and list(tag.value) == [1, "<u2", (2, 3), False]
