"""Xspress3 / Xspress3-mini fluorescence detectors over ZMQ SUB, typ ``xspress``.

Upstream messages:

* header: JSON ``{"htype": "header", "filename", "overwritable"}``; newer firmware adds
  ``limits`` and ``extra_tags`` (kept as attributes);
* image: a JSON header ``{"htype": "image", "frame", "shape": [channels, 4096], "exptime",
  "type": "uint32", "compression": "none"}``, the raw spectra, and a **pickled** list of
  per-channel metadata arrays (8, or 9 with the window counts of shape ``(2, channels)``).
  Older firmware sends the three as consecutive single-part messages, newer as one 3-part
  message;
* end: JSON ``{"htype": "series_end"}``.

The framer normalises both image formats to one DATA event of 3 frames ``[json, spectra,
pickle]``; START and END are ``[json]``. An old-format image header not followed by its two
parts is dropped (counted) when the next JSON message arrives. Every image is fully checked
(spectra size, metadata) before it is forwarded. The metadata pickle is only ever loaded with
:func:`~tango_dranspose.core.safepickle.restricted_loads`, which rebuilds plain data (lists, numpy
arrays) and refuses anything else, e.g. a pickle naming ``os.system``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter

from tango_dranspose.core.events import StreamData, frame_buffer
from tango_dranspose.core.safepickle import UnsafePickleError, restricted_loads
from tango_dranspose.streams import codecs
from tango_dranspose.streams.base import (
    Framed,
    Framer,
    Kind,
    MessageModel,
    ParseError,
    Protocol,
    expect_frames,
    expect_typ,
    first_json,
    load_json,
    lookup,
    validate,
)

TYP = "xspress"

META_NAMES = (
    "ocr",
    "AllEvents",
    "AllGood",
    "ClockTicks",
    "TotalTicks",
    "ResetTicks",
    "event_widths",
    "dtc",
    "window_counts",
)
"""Names of the pickled metadata arrays, in wire order; the 9th only from newer firmware."""


class XspressStart(MessageModel):
    htype: Literal["header"]
    filename: str
    overwritable: bool = False


class XspressImage(MessageModel):
    htype: Literal["image"]
    frame: int
    shape: list[int]
    exptime: float | None = 1
    type: str
    compression: str | None = "none"
    data: np.ndarray | None = None
    """The spectra, ``(channels, bins)``, viewing the received frame."""
    meta: dict[str, np.ndarray] = Field(default_factory=dict)
    """Per-channel metadata by name (see :data:`META_NAMES`)."""


class XspressEnd(MessageModel):
    htype: Literal["series_end"]


XspressMessage = XspressStart | XspressImage | XspressEnd
XspressPacket: TypeAdapter[XspressMessage] = TypeAdapter(
    Annotated[XspressMessage, Field(discriminator="htype")]
)
"""Validates a decoded Xspress3 JSON header into the matching model (dranspose's name)."""


def _validate(head: dict[str, Any]) -> XspressMessage:
    return validate(XspressPacket, head, f"Xspress3 {head.get('htype')!r} message")


def load_meta(frame: Any, what: str = "Xspress3 metadata") -> dict[str, np.ndarray]:
    """The metadata pickle as ``{name: array}``; refuses anything but plain data.

    The detector sends 8 or 9 arrays (:data:`META_NAMES`, in that order). Fewer are accepted
    too, named in the same order: dranspose's own ``XspressImage(meta={}).to_stream_data()``
    sends none, and its example source one (``meta={"ocr": 1}``). More than 9 are refused:
    there is no name for them.
    """
    try:
        values = restricted_loads(frame_buffer(frame))
    except UnsafePickleError as exc:
        raise ParseError(f"{what}: {exc}") from None
    except (pickle.UnpicklingError, TypeError) as exc:
        raise ParseError(f"{what} is not a valid pickle: {exc}") from None
    if not isinstance(values, list | tuple):
        raise ParseError(f"{what} must be a list of arrays, got {type(values).__name__}")
    if len(values) > len(META_NAMES):
        raise ParseError(f"{what} holds {len(values)} arrays, at most {len(META_NAMES)} are known")
    meta: dict[str, np.ndarray] = {}
    for name, value in zip(META_NAMES, values, strict=False):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise ParseError(f"{what}: {name} is not an array: {exc}") from None
        if array.dtype.kind not in "biuf":
            raise ParseError(f"{what}: {name} is not numeric ({array.dtype})")
        meta[name] = array
    return meta


def _image(packet: XspressImage, frames: Sequence[Any]) -> XspressImage:
    what = f"Xspress3 image {packet.frame}"
    if len(packet.shape) != 2:
        raise ParseError(f"{what}: shape must be [channels, bins], got {packet.shape}")
    packet.data = codecs.decompress(frames[1], packet.compression, packet.type, packet.shape, what)
    packet.meta = load_meta(frames[2], f"{what} metadata")
    return packet


def parse(data: StreamData) -> XspressMessage:
    """One Xspress3 event as its model; :class:`ParseError` when invalid."""
    expect_typ(data, TYP)
    expect_frames(data, 1, "an Xspress3 message")
    packet = _validate(load_json(data.frames[0], "Xspress3 message"))
    if isinstance(packet, XspressImage):
        if data.length != 3:
            raise ParseError(
                f"an Xspress3 image needs 3 frames (header, spectra, metadata), got {data.length}"
            )
        return _image(packet, data.frames)
    if data.length != 1:
        raise ParseError(f"an Xspress3 {packet.htype} has 1 frame, got {data.length}")
    return packet


def _json_head(frame: Any) -> dict[str, Any] | None:
    """The JSON object of a control/header part, or None for a binary part."""
    view = frame_buffer(frame)
    if not len(view) or view[0] != ord("{"):
        return None
    try:
        value = load_json(view)
    except ParseError:
        return None  # binary data that happens to start with "{"
    return value if "htype" in value else None


_KINDS = {"header": Kind.START, "image": Kind.DATA, "series_end": Kind.END}


class XspressFramer(Framer):
    """Normalises old (3 messages) and new (1 message of 3 parts) images to 3-frame events."""

    typ = TYP

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[Any] = []  # old format: the image's parts received so far

    def reset(self) -> None:
        super().reset()
        self._pending = []

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if len(message) == 3:
            self._abandon_pending()
            return self._emit_image(list(message))
        if len(message) != 1:
            self._abandon_pending()
            return self.drop(f"message with {len(message)} parts", message)
        part = message[0]
        head = _json_head(part)
        if head is None:
            if not self._pending:
                return self.drop("binary part without an image header", part)
            self._pending.append(part)
            if len(self._pending) < 3:
                return []
            frames, self._pending = self._pending, []
            return self._emit_image(frames)
        self._abandon_pending()
        htype = head.get("htype")
        kind = lookup(_KINDS, htype)
        if kind is None:
            return self.drop(f"unknown htype {htype!r}", part)
        if kind is Kind.DATA:
            self._pending = [part]
            return []
        try:
            _validate(head)
        except ParseError as exc:
            return self.drop(f"invalid {htype} message", str(exc))
        return self.forward(kind, [part])

    def flush(self) -> list[Framed]:
        self._abandon_pending()
        return []

    def _abandon_pending(self) -> None:
        if self._pending:
            self.drop("image header not followed by its spectra and metadata", self._pending)
            self._pending = []

    def _emit_image(self, frames: list[Any]) -> list[Framed]:
        try:
            parse(StreamData(TYP, frames))
        except ParseError as exc:
            return self.drop("invalid image message", str(exc))
        return self.forward(Kind.DATA, frames)

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        head = first_json(message)
        # The detector sends "overwritable"; dranspose's XspressStart(filename=...) does not,
        # but neither has STINS's msg_number.
        return head.get("htype") == "header" and (
            "overwritable" in head or ("filename" in head and "msg_number" not in head)
        )


# -- building messages (simulators and tests) -----------------------------------------------


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def build_header(filename: str = "", overwritable: bool = False, **extra: Any) -> list[bytes]:
    return [_json({"htype": "header", "filename": filename, "overwritable": overwritable, **extra})]


def default_meta(spectra: np.ndarray, window_counts: bool = True) -> list[np.ndarray]:
    """Plausible metadata arrays for ``spectra`` (channels, bins), in wire order."""
    channels = spectra.shape[0]
    events = spectra.sum(axis=1).astype(np.uint32)
    ticks = np.full(channels, 4_000_000, dtype=np.uint32)
    meta = [
        events / 1e9,
        events,
        events,
        ticks,
        ticks,
        np.zeros(channels, dtype=np.uint32),
        np.full(channels, 6, dtype=np.int32),
        np.ones(channels, dtype=np.float64),
    ]
    if window_counts:
        meta.append(np.zeros((2, channels), dtype=np.uint32))
    return meta


def _image_parts(
    spectra: np.ndarray,
    frame: int,
    exptime: float,
    meta: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None,
) -> list[bytes]:
    if isinstance(meta, Mapping):
        meta = [meta[name] for name in META_NAMES if name in meta]
    arrays = list(meta) if meta is not None else default_meta(spectra)
    head = {
        "htype": "image",
        "exptime": exptime,
        "frame": frame,
        "shape": list(spectra.shape),
        "type": spectra.dtype.name,
        "compression": "none",
    }
    # Producing a pickle is harmless; only loading one is restricted.
    return [_json(head), np.ascontiguousarray(spectra).tobytes(), pickle.dumps(arrays, protocol=4)]


def build_image(
    spectra: np.ndarray,
    frame: int,
    exptime: float = 0.1,
    meta: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
) -> list[bytes]:
    """One new-format image message: 3 parts (JSON, spectra, pickled metadata)."""
    return _image_parts(spectra, frame, exptime, meta)


def build_image_old(
    spectra: np.ndarray,
    frame: int,
    exptime: float = 0.1,
    meta: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
) -> list[list[bytes]]:
    """One old-format image: three single-part messages (JSON, spectra, pickled metadata)."""
    return [[part] for part in _image_parts(spectra, frame, exptime, meta)]


def build_end() -> list[bytes]:
    return [_json({"htype": "series_end"})]


PROTOCOL = Protocol(
    typ=TYP,
    framer=XspressFramer,
    parse=parse,
    description="Xspress3 fluorescence: JSON header, image = JSON + spectra + pickled metadata",
)

__all__ = [
    "META_NAMES",
    "PROTOCOL",
    "TYP",
    "XspressEnd",
    "XspressFramer",
    "XspressImage",
    "XspressMessage",
    "XspressPacket",
    "XspressStart",
    "build_end",
    "build_header",
    "build_image",
    "build_image_old",
    "default_meta",
    "load_meta",
    "parse",
]
