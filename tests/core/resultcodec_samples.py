"""Classes and helpers shared by the resultcodec tests.

Messages name the classes here as ``tests.core.resultcodec_samples:Point`` and so on; the
refusal tests also name things in this module that are not its classes (``ARRAYS``,
``helper_function``, the imported ``BaseModel``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import cbor2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tango_dranspose.core.resultcodec import allow_list_for, decode, encode

SAMPLES = __name__

# This module plays the payload package: its top-level package ("tests") is allowed.
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
