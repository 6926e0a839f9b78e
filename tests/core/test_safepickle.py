from __future__ import annotations

import collections
import datetime
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest

from tango_dranspose.core.safepickle import (
    MAX_DEPTH,
    MalformedPickleError,
    UnsafePickleError,
    restricted_loads,
)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_round_trips(protocol: int) -> None:
    value = collections.OrderedDict(
        a=np.arange(4, dtype=np.uint32), b=[1.5, "x", (1, 2)], c={"d": None}
    )
    back = restricted_loads(pickle.dumps(value, protocol=protocol))
    assert list(back) == ["a", "b", "c"]
    assert back["a"].dtype == np.uint32 and back["a"].tolist() == [0, 1, 2, 3]
    assert back["b"] == [1.5, "x", (1, 2)]


def test_code_is_refused() -> None:
    with pytest.raises(UnsafePickleError, match="system"):
        restricted_loads(pickle.dumps(Evil()))


# -- plain data of every allowed kind, every protocol -----------------------------------------


def plain_value() -> dict[str, object]:
    return collections.OrderedDict(
        big_endian=np.arange(4, dtype=">u4"),
        fortran=np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        raw=np.zeros(2, dtype="V3"),
        durations=np.array([1, 2], dtype="m8[10ms]"),
        text=np.array(["ab", "c"]),
        stamp=np.datetime64("2024-01-01T00:00:00"),
        scalar=np.float32(2.5),
        dtype=np.dtype(">u2"),
        items=[1.5, "x", (1, 2), b"by", bytearray(b"ba"), {1, 2}, frozenset({3}), complex(1, 2)],
        ranges=[slice(1, 2, 3), range(5)],
        when=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        spans=[datetime.date(2024, 1, 1), datetime.time(1, 2), datetime.timedelta(3)],
        grouped=collections.defaultdict(list, {"k": [1]}),
        empty=b"",
        kind=list,
    )


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_allowed_kind_round_trips(protocol: int) -> None:
    value = plain_value()
    back = restricted_loads(pickle.dumps(value, protocol=protocol))
    assert list(back) == list(value)
    for key, original in value.items():
        got = back[key]
        assert type(got) is type(original), key
        if isinstance(original, np.ndarray):
            np.testing.assert_array_equal(got, original)
            assert got.dtype == original.dtype.newbyteorder("=") or got.dtype == original.dtype
        else:
            assert got == original, key
    assert back["grouped"].default_factory is list
    assert back["fortran"].flags["F_CONTIGUOUS"]


# -- pickles that ask for more than they hold -------------------------------------------------

U8, U4 = struct.Struct("<Q"), struct.Struct("<I")


def _long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _text(value: str) -> bytes:
    return b"X" + U4.pack(len(value)) + value.encode()


def _object_flags_dtype_array() -> bytes:
    # numpy accepts dtype state whose flags claim object pointers in a V16: its array
    # state would then be taken for PyObject pointers.
    return (
        b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _text("b")
        + b"\x87R(K\x01K\x01\x85cnumpy\ndtype\n"
        + _text("V16")
        + b"\x89\x88\x87R(K\x03"
        + _text("|")
        + b"NNNJ\x10\x00\x00\x00J\x01\x00\x00\x00K\x3ftb\x89]K\x05atb."
    )


def _laughs(levels: int = 60) -> bytes:
    out = bytearray(b"\x80\x02]q\x00")
    for level in range(1, levels):
        out += b"h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"\x86q" + bytes([level])
    return bytes(out) + b"."


BOMBS = {
    "bytearray8 of 2**62 bytes": b"\x80\x05\x96" + U8.pack(2**62),
    "bytearray8 of 1 GiB": b"\x80\x05\x96" + U8.pack(2**30) + b"x.",
    "binbytes8 of 2**62 bytes": b"\x80\x04\x8e" + U8.pack(2**62) + b"x.",
    "binbytes of 4 GiB": b"\x80\x03B" + U4.pack(2**32 - 1) + b"x.",
    "binunicode8": b"\x80\x04\x8d" + U8.pack(2**40) + b"x.",
    "frame of 2**62": b"\x80\x04\x95" + U8.pack(2**62) + b"N.",
    "memo index 2**32-1": b"\x80\x02Nr" + U4.pack(2**32 - 1) + b".",
    "text memo index": b"\x80\x02Np99999999999999\n.",
    "bytearray(2**40)": b"\x80\x02cbuiltins\nbytearray\n" + _long1(2**40) + b"\x85R.",
    "bytes(2**40)": b"\x80\x02cbuiltins\nbytes\n" + _long1(2**40) + b"\x85R.",
    "list(range(10**12))": b"\x80\x02cbuiltins\nlist\ncbuiltins\nrange\n"
    + _long1(10**12)
    + b"\x85R\x85R.",
    "range(10**12)": b"\x80\x02cbuiltins\nrange\n" + _long1(10**12) + b"\x85R.",
    "ndarray called": b"\x80\x02cnumpy\nndarray\n"
    + _long1(2**36)
    + b"\x85cnumpy\ndtype\n"
    + _text("f8")
    + b"\x85R\x86R.",
    "_reconstruct of 2**36 bytes": b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n"
    b"cnumpy\nndarray\n" + _long1(2**36) + b"\x85" + _text("b") + b"\x87R.",
    "object dtype": b"\x80\x02cnumpy\ndtype\n" + _text("O") + b"\x85R.",
    "dtype state numpy crashes on": b"\x80\x02cnumpy\ndtype\n"
    + _text("u2")
    + b"\x85R(K\x03"
    + _text(">")
    + b"NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb.",
    "structured dtype": pickle.dumps(np.zeros(2, dtype=[("x", "<f8"), ("y", "<i2")]), 2),
    "object flags in a dtype": _object_flags_dtype_array(),
    "a list that holds itself": b"\x80\x02]q\x00h\x00a.",
    "65 nested lists": b"\x80\x02" + b"(" * 65 + b"l" * 65 + b".",
    "5000 nested lists": b"\x80\x02" + b"(" * 5000 + b"l" * 5000 + b".",
    "2**59 shared references": _laughs(),
    "complex of a huge int": b"\x80\x02cbuiltins\ncomplex\n" + _long1(2**1100) + b"\x85R.",
    "timedelta overflow": b"\x80\x02cdatetime\ntimedelta\n" + _long1(2**62) + b"\x85R.",
    "codec other than latin1": b"\x80\x02c_codecs\nencode\n"
    + _text("eJwDAAAAAAE=")
    + _text("base64")
    + b"\x86R.",
    "no STOP": b"\x80\x02N",
    "invalid opcode": b"\x80\x02\xff.",
    "unsupported protocol": b"\x80\xff.",
    "11 bytes of garbage": b"\x80\x02\x8b\xff\xff\xff\x7f\x00\x00\x00.",
}


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_before_allocating(name: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(MalformedPickleError):
            restricted_loads(BOMBS[name])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{name} made the loader allocate {peak >> 20} MiB"


def test_depth_limit_is_the_documented_one() -> None:
    deep_ok = b"\x80\x02" + b"(" * MAX_DEPTH + b"l" * MAX_DEPTH + b"."
    value = restricted_loads(deep_ok)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []


def test_numpys_shared_dtypes_are_not_changed_by_a_pickle() -> None:
    restricted_loads(pickle.dumps(np.arange(3, dtype=">u4"), protocol=4))
    assert np.dtype("u4").byteorder == "="
    assert np.dtype("u4").str == np.dtype("=u4").str


def test_no_other_exception_for_any_truncation_or_flip() -> None:
    """Every prefix of a real pickle and many one-byte corruptions: only pickling errors."""
    good = pickle.dumps(plain_value(), protocol=4)
    rng = np.random.default_rng(7)
    variants = [good[:n] for n in range(len(good))]
    for _ in range(3000):
        raw = bytearray(good)
        raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        variants.append(bytes(raw))
    outcomes = collections.Counter()
    for raw in variants:
        try:
            restricted_loads(raw)
            outcomes["loaded"] += 1
        except pickle.UnpicklingError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > len(good)  # every prefix at least
    assert sum(outcomes.values()) == len(variants)
