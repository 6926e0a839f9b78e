"""Hypothesis strategies that turn real upstream messages into hostile ones.

A fuzz case is a short list of upstream messages: usually a window of one seed sequence (its
start message first, half of the time, so the scan is running) with one to three messages
mutated; sometimes plain random bytes. Mutations are drawn from hypothesis, so a failure
shrinks to the smallest change that still breaks a framer.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

from tests.fuzz.corpus import Corpus, Message

_T = TypeVar("_T")

# -- values that break parsers -------------------------------------------------------------

HUGE_INTS = (
    -1,
    0,
    1,
    255,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**62,
    2**63,
    2**64,
    2**100,
    -(2**63) - 1,
    10**400,
)
FLOATS = (0.0, -0.0, 1e308, -1e308, 1e-320, float("inf"), float("-inf"), float("nan"))
STRINGS = (
    "",
    "none",
    "<",
    "bslz4",
    "lz4",
    "lz4<",
    "bs32-lz4<",
    "zstd",
    "uint32",
    "uint16",
    "float64",
    "<f8",
    "object",
    "O",
    "V0",
    "S0",
    "U4",
    "M8",
    "header",
    "image",
    "series_end",
    "dheader-1.0",
    "dimage-1.0",
    "dimage_d-1.0",
    "dconfig-1.0",
    "dseries_end-1.0",
    "start",
    "end",
    "msg",
    "traces",
    "data",
    "series-start",
    "series-end",
    "started",
    "running",
    "finished",
    "heartbeat",
    "DataDescription",
    "RecordData",
    "RecordEnd",
    "custom_data",
    "all",
    "basic",
    "\x00",
    "\udcff",
    "x" * 5000,
)
KEYS = (
    "htype",
    "type",
    "message_type",
    "status",
    "what",
    "frame",
    "frame_number",
    "series",
    "series_id",
    "shape",
    "size",
    "compression",
    "encoding",
    "dtype",
    "msg_number",
    "header_detail",
    "filename",
    "ntriggers",
    "channels",
    "ch",
    "ts",
    "exptime",
    "arm_time",
    "timestamp",
    "point_nb",
    "column_desc",
    "detector_specific",
    "message_id",
    "version",
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HUGE_INTS),
    st.integers(-3, 70000),
    st.sampled_from(FLOATS),
    st.sampled_from(STRINGS),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
DEPTHS = st.sampled_from([30, 64, 65, 100, 900, 1000, 5000, 100_000])

# Strategies are built once: hypothesis validates each new strategy object, which cost more
# than running the case. Choices among lists of varying length draw an index from a fixed
# range and wrap it (shrinking still goes towards the first element).
_INDEX = st.integers(0, (1 << 16) - 1)
_NEAR = st.integers(0, 64)
_ANYWHERE = st.integers(0, (1 << 24) - 1)
_BOOL = st.booleans()
_BIT = st.integers(0, 7)
_FLIPS = st.integers(1, 8)
_PATCH = st.binary(min_size=1, max_size=16)
_INSERT = st.binary(min_size=1, max_size=64)
_NEW_PART = st.binary(max_size=32)
_RANDOM_FRAME = st.binary(max_size=256)
_GARBAGE = st.lists(st.lists(st.binary(max_size=128), max_size=4), min_size=1, max_size=4)
_BRACKETS = st.sampled_from([("[", "]"), ('{"a":', "}")])
_PART_OPS = st.sampled_from(["drop", "dup", "swap", "add", "empty", "none"])
_WIDTHS = st.sampled_from([">Q", "<Q", ">I", "<I", ">H"])
_HUGE = st.sampled_from([2**62, 2**63 - 1, 2**64 - 1, 2**40, 2**31, 2**32 - 1])
_NESTING = st.sampled_from(["json", "pickle", "cbor"])


def _pick(draw: Any, items: Sequence[_T]) -> _T:
    return items[draw(_INDEX) % len(items)]


# -- hostile frames built from scratch -----------------------------------------------------


def _long1(value: int) -> bytes:
    """The LONG1 opcode pushing ``value``."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _text(value: str) -> bytes:
    """The BINUNICODE opcode pushing ``value``."""
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _nine(obj: bytes) -> bytes:
    """A pickle of a list of nine references to the object ``obj`` pushes (Xspress3 wants 8
    or 9 arrays, so that the bomb gets past the length check)."""
    return b"\x80\x02(" + obj + b"q\xff" + b"h\xff" * 8 + b"l."


def _in_contrast_point(obj: bytes) -> bytes:
    """A Contrast ``running`` dict with the object ``obj`` pushes as one of its entries."""
    dt = b"G" + struct.pack(">d", 0.1)
    items = _text("status") + _text("running") + _text("dt") + dt + _text("det") + obj
    return b"\x80\x02}(" + items + b"u."


def _pickle_bombs() -> list[bytes]:
    """Pickles that declare far more than they hold, allocate on request, nest deeply, or
    refer to themselves; alone and inside the containers the protocols expect."""
    q = struct.Struct("<Q")
    i = struct.Struct("<I")
    deep = b"(" * 5000 + b"l" * 5000
    cycle = b"]q\x00h\x00a"
    laughs = bytearray(b"]q\x00")
    for level in range(1, 60):
        # Each level a pair of references to the level below: 2**59 leaves in 300 bytes.
        laughs += b"h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"\x86q" + bytes([level])
    calls = [
        _global("builtins", "bytearray") + _long1(2**40) + b"\x85R",
        _global("builtins", "bytearray") + _long1(2**26) + b"\x85R",
        _global("builtins", "list") + _global("builtins", "range") + _long1(10**12) + b"\x85R\x85R",
        _global("builtins", "range") + _long1(10**12) + b"\x85R",
        _global("numpy", "ndarray")
        + _long1(2**36)
        + b"\x85"
        + _global("numpy", "dtype")
        + _text("f8")
        + b"\x85R\x86R",
        _global("numpy.core.multiarray", "_reconstruct")
        + _global("numpy", "ndarray")
        + _long1(2**36)
        + b"\x85"
        + _text("b")
        + b"\x87R",
        _global("builtins", "complex") + _long1(10**400 % 2**1000) + b"\x85R",
        _global("datetime", "timedelta") + _long1(2**62) + b"\x85R",
        _global("_codecs", "encode") + _text("x" * 10) + _text("zlib_codec") + b"\x86R",
        bytes(laughs),
        deep,
        cycle,
    ]
    bombs = [
        b"\x80\x05\x96" + q.pack(2**62),  # bytearray8 of 2**62 bytes, 11 bytes long
        b"\x80\x05\x96" + q.pack(2**30) + b"x.",
        b"\x80\x04\x8e" + q.pack(2**62) + b"x.",  # binbytes8
        b"\x80\x04\x8e" + q.pack(2**64 - 1) + b"x.",
        b"\x80\x04\x8d" + q.pack(2**40) + b"x.",  # binunicode8
        b"\x80\x03B" + i.pack(2**32 - 1) + b"x.",  # binbytes of 4 GiB
        b"\x80\x02\x8b" + i.pack(2**31 - 1) + b".",  # long4
        b"\x80\x04\x95" + q.pack(2**62) + b"N.",  # frame
        b"\x80\x02Nr" + i.pack(2**32 - 1) + b".",  # memo index 2**32 - 1
        b"\x80\x02Np99999999999999\n.",
        pickle.dumps([float("nan"), 2**1000], protocol=2),
    ]
    for call in calls:
        bombs += [b"\x80\x02" + call + b".", _nine(call), _in_contrast_point(call)]
    return bombs


PICKLE_BOMBS = tuple(_pickle_bombs())


def _cbor_sharing() -> bytes:
    """40 levels of pairs of shared references (CBOR tags 28/29): 2**40 paths."""
    out = bytearray(b"\xd9\xd9\xf7\xa2\x64type\x65image\x69user_data\x98\x28\xd8\x1c\x80")
    for level in range(1, 40):
        ref = b"\xd8\x1d" + (bytes([level - 1]) if level - 1 < 24 else b"\x18" + bytes([level - 1]))
        out += b"\xd8\x1c\x82" + ref + ref
    return bytes(out)


CBOR_BOMBS = (
    _cbor_sharing(),
    b"\xd9\xd9\xf7\xa1\x64type\x65image" + b"\x81" * 5000 + b"\x00",
    b"\xbf" * 5000,
    b"\xa1\x64type\x5b" + struct.pack(">Q", 2**62),  # a byte string of 2**62 bytes
    b"\xa1\x64type\x9b" + struct.pack(">Q", 2**62),  # an array of 2**62 items
    b"\xa2\x64type\x65image\x64data\xa1\x61a\xd8\x28\x82\x82\x1a\x00\x01\x00\x00\x1a\x00\x01"
    b"\x00\x00\xd8\x46\xd9\xdc\xb4\x83\x65bslz4\x04\x4c" + struct.pack(">QI", 2**40, 8192),
)


def _deep_json(draw: Any, frame: bytes) -> bytes:
    depth = draw(DEPTHS)
    opener, closer = draw(_BRACKETS)
    inner = opener * depth + "1" + closer * depth
    try:
        head = json.loads(frame)
    except (ValueError, RecursionError):
        head = None
    if isinstance(head, dict) and draw(_BOOL):
        # Keep the message valid but for one deeply nested field, so that it gets past
        # the htype dispatch into the models.
        key = _pick(draw, [*sorted(head), "meta", "user_data", "appendix"])
        text = json.dumps({k: v for k, v in head.items() if k != key})
        return (text[:-1] + (", " if len(text) > 2 else "") + f'"{key}": {inner}}}').encode()
    return inner.encode()


# -- mutations of one message ----------------------------------------------------------------

Mutation = Callable[[Any, Message, Corpus], Message]


def _frame_index(draw: Any, message: Message) -> int:
    return draw(_INDEX) % len(message)


def _position(draw: Any, frame: bytes) -> int:
    # Headers are near the start: bias positions there, but reach the whole frame.
    return draw(_NEAR if draw(_BOOL) else _ANYWHERE) % (len(frame) + 1)


def flip_bits(draw: Any, message: Message, corpus: Corpus) -> Message:
    index = _frame_index(draw, message)
    frame = bytearray(message[index])
    for _ in range(draw(_FLIPS)):
        if not frame:
            break
        pos = min(_position(draw, bytes(frame)), len(frame) - 1)
        frame[pos] ^= 1 << draw(_BIT)
    return [*message[:index], bytes(frame), *message[index + 1 :]]


def overwrite(draw: Any, message: Message, corpus: Corpus) -> Message:
    index = _frame_index(draw, message)
    frame = message[index]
    pos = _position(draw, frame)
    patch = draw(_PATCH)
    return [
        *message[:index],
        frame[:pos] + patch + frame[pos + len(patch) :],
        *message[index + 1 :],
    ]


def truncate(draw: Any, message: Message, corpus: Corpus) -> Message:
    index = _frame_index(draw, message)
    frame = message[index]
    return [*message[:index], frame[: _position(draw, frame)], *message[index + 1 :]]


def insert(draw: Any, message: Message, corpus: Corpus) -> Message:
    index = _frame_index(draw, message)
    frame = message[index]
    pos = _position(draw, frame)
    patch = draw(_INSERT)
    return [*message[:index], frame[:pos] + patch + frame[pos:], *message[index + 1 :]]


def reshape_parts(draw: Any, message: Message, corpus: Corpus) -> Message:
    """Drop, duplicate, swap or add whole frames (the part count is part of most protocols)."""
    parts = list(message)
    op = draw(_PART_OPS)
    index = _frame_index(draw, parts)
    if op == "drop":
        del parts[index]
    elif op == "dup":
        parts.insert(index, parts[index])
    elif op == "swap":
        other = _frame_index(draw, parts)
        parts[index], parts[other] = parts[other], parts[index]
    elif op == "add":
        parts.insert(index, draw(_NEW_PART))
    elif op == "empty":
        parts[index] = b""
    else:
        parts = []
    return parts


def splice(draw: Any, message: Message, corpus: Corpus) -> Message:
    """A frame replaced by, or joined with, a frame of another message of the protocol."""
    index = _frame_index(draw, message)
    donor = _pick(draw, corpus.frames)
    if draw(_BOOL):
        frame = donor
    else:
        frame = message[index][: _position(draw, message[index])] + donor[_position(draw, donor) :]
    return [*message[:index], frame, *message[index + 1 :]]


def json_field(draw: Any, message: Message, corpus: Corpus) -> Message:
    """One field of a JSON frame set to a hostile value, or removed."""
    candidates = []
    for index, frame in enumerate(message):
        if frame[:1] == b"{":
            try:
                value = json.loads(frame)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                candidates.append((index, value))
    if not candidates:
        return overwrite(draw, message, corpus)
    index, head = _pick(draw, candidates)
    key = _pick(draw, [*sorted(head), *KEYS])
    if draw(_INDEX) % 6 == 0:
        head.pop(key, None)
    else:
        head[key] = draw(JSON_VALUES)
    return [*message[:index], json.dumps(head).encode(), *message[index + 1 :]]


def huge_size(draw: Any, message: Message, corpus: Corpus) -> Message:
    """A length, count or size field somewhere in a binary header made huge."""
    index = _frame_index(draw, message)
    frame = message[index]
    pos = _position(draw, frame)
    width = draw(_WIDTHS)
    value = draw(_HUGE)
    packed = struct.pack(width, value % (1 << (8 * struct.calcsize(width))))
    return [
        *message[:index],
        frame[:pos] + packed + frame[pos + len(packed) :],
        *message[index + 1 :],
    ]


def deep_nesting(draw: Any, message: Message, corpus: Corpus) -> Message:
    index = _frame_index(draw, message)
    kind = draw(_NESTING)
    if kind == "json":
        frame = _deep_json(draw, message[index])
    elif kind == "pickle":
        frame = _pick(draw, PICKLE_BOMBS)
    else:
        frame = _pick(draw, CBOR_BOMBS)
    return [*message[:index], frame, *message[index + 1 :]]


def random_frame(draw: Any, message: Message, corpus: Corpus) -> Message:
    index = _frame_index(draw, message)
    return [*message[:index], draw(_RANDOM_FRAME), *message[index + 1 :]]


MUTATIONS: tuple[Mutation, ...] = (
    flip_bits,
    overwrite,
    truncate,
    insert,
    reshape_parts,
    splice,
    json_field,
    json_field,  # most protocols are JSON-headed: twice the weight
    huge_size,
    deep_nesting,
    random_frame,
)


def mutate(draw: Any, message: Message, corpus: Corpus) -> Message:
    if not message:
        return [draw(_INSERT)]
    return _pick(draw, MUTATIONS)(draw, list(message), corpus)


# -- whole cases -----------------------------------------------------------------------------


@st.composite
def fuzz_case(draw: Any, corpus: Corpus) -> list[Message]:
    """The upstream messages of one fuzz case for the protocol of ``corpus``."""
    seed = _pick(draw, corpus.seeds)
    messages = [list(m) for m in seed.messages]
    if draw(_INDEX) % 10 == 0:
        # Pure garbage, after a real start message half of the time.
        garbage = draw(_GARBAGE)
        return ([messages[0]] if draw(_BOOL) else []) + garbage
    start = draw(_INDEX) % len(messages)
    window = messages[start : start + 1 + draw(_INDEX) % 6]
    if start > 0 and draw(_BOOL):
        window.insert(0, messages[0])
    for _ in range(1 + draw(_INDEX) % 3):
        index = draw(_INDEX) % len(window)
        window[index] = mutate(draw, window[index], corpus)
    return window
