"""HDF5 and NeXus files as replay inputs: a scan written to disk replays like a live one.

Named on the command line as ``STREAM:hdf5=FILE.h5?dataset=/entry/data/data`` (``:hdf5`` may be
left out for files ending in ``.h5``, ``.hdf5``, ``.nxs``...). Options, URL-query style:

* ``dataset=PATH`` (repeatable): what to stream. Without it, ``/entry/data/data``.
* ``protocol=NAME``: the stream protocol the events are dressed in (see below).

A dataset of ``N`` frames (``ndim >= 2``: images, spectra) becomes a detector stream: event 0 is
the start message, events 1..N one frame each, event N+1 the end message, as an ingester would
forward them. ``STINS`` by default, or ``DECTRIS_STREAM2``. In the Eiger/NeXus layout the
master file's ``/entry/data`` holds ``data_000001, data_000002, ...`` external links to the
data files; ``dataset=/entry/data/data`` (or the group ``/entry/data``) then means all of them,
in order.

Frames stored bitshuffle+LZ4 (HDF5 filter 32008, as Dectris file writers store them) in chunks of
one frame are read with ``read_direct_chunk`` and travel still compressed, ``compression:
bslz4``, exactly the bytes a detector stream carries: the filter's chunk format is the framing
the stream protocols use. Nothing is decompressed on the way; the payload's ``parse`` does it,
as live. Any other layout or filter is read decompressed by HDF5 (filters from ``hdf5plugin`` or
``bitshuffle`` when installed) and travels uncompressed.

One-dimensional datasets (motor positions, counters: one value per point) become a scalar stream,
each named ``dataset=`` one column: ``PCAP`` rows by default (``frame_number`` and one field per
dataset, named by the dataset's last path component), or ``sardana`` records (``point_nb`` and
one column per dataset; ``timestamp`` is the point number unless a dataset is named so).
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cbor2
import h5py
import numpy as np

from tango_dranspose.core.capture import CaptureError
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import dectris_stream2, get_protocol, pcap, sardana, stream1
from tango_dranspose.streams.base import DropCounter
from tango_dranspose.streams.dectris_cbor import (
    TAG_DECTRIS_COMPRESSION,
    TAG_MULTI_DIM,
    TAG_SELF_DESCRIBE,
    TYPED_ARRAY_DTYPES,
)

SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx")
DEFAULT_DATASET = "/entry/data/data"
FRAME_PROTOCOLS = (stream1.TYP, dectris_stream2.TYP)
SCALAR_PROTOCOLS = (pcap.TYP, sardana.TYP)
OPTIONS = ("dataset", "protocol")
# Fields of the scalar protocols' messages that a column must not replace.
RESERVED = {
    pcap.TYP: frozenset({"message_id", "message_type", "version", "frame_number"}),
    sardana.TYP: frozenset({"type", "point_nb"}),
}
BLOCK_BYTES = 16 << 20

BITSHUFFLE_FILTER = 32008
_BITSHUFFLE_LZ4 = 2  # cd_values[4] of the bitshuffle filter: 2 = LZ4, 3 = zstd
_EIGER_PART = re.compile(r"^(?P<base>.*)_(?P<n>\d{6})$")
_SPEC = re.compile(
    r"^(?:(?P<stream>[A-Za-z0-9_.\-]+)(?::(?P<protocol>[A-Za-z0-9_]+))?=)?(?P<rest>.+)$"
)
# Typed-array tag of a little-endian dtype, for stream v2 images (the first tag wins: 64, not
# the clamped 68, for uint8).
_TYPED_TAG = {v: k for k, v in reversed(TYPED_ARRAY_DTYPES.items())}


def is_hdf5_spec(text: str) -> bool:
    """Whether a ``-f`` argument names an HDF5 input rather than a capture file."""
    match = _SPEC.match(text)
    if match is None:
        return False
    if match["protocol"] is not None:
        return match["protocol"].lower() == "hdf5"
    path = match["rest"].partition("?")[0]
    return path.lower().endswith(SUFFIXES)


@dataclass(frozen=True)
class Hdf5Spec:
    path: Path
    stream: str
    datasets: tuple[str, ...] = (DEFAULT_DATASET,)
    protocol: str | None = None

    @classmethod
    def parse(cls, text: str) -> Hdf5Spec:
        match = _SPEC.match(text)
        if match is None:
            raise CaptureError(f"{text!r}: expected STREAM:hdf5=FILE.h5?dataset=/path")
        path_text, _, query = match["rest"].partition("?")
        try:
            options = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            if query:
                raise CaptureError(
                    f"{text}: cannot read the options {query!r}; write them as "
                    "?dataset=/path&protocol=NAME"
                ) from None
            options = {}
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise CaptureError(
                f"{text}: unknown option(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(OPTIONS)})"
            )
        protocols = options.get("protocol", [])
        if len(protocols) > 1:
            raise CaptureError(f"{text}: give protocol= once")
        path = Path(path_text)
        return cls(
            path=path,
            stream=match["stream"] or path.stem,
            datasets=tuple(options.get("dataset", [])) or (DEFAULT_DATASET,),
            protocol=protocols[0] if protocols else None,
        )


def _register_filters() -> None:
    """Make HDF5 filter plugins that are installed available to h5py (import registers them)."""
    for module in ("hdf5plugin", "bitshuffle.h5"):
        try:
            __import__(module)
        except ImportError:
            continue


def _member(group: h5py.Group, key: str, what: str) -> Any:
    """``group[key]``; an external link whose file is missing is named in the error."""
    try:
        return group[key]
    except KeyError:
        link = group.get(key, getlink=True)
        target = getattr(link, "filename", None)
        hint = f" (links to {target}, which cannot be opened)" if target else ""
        path = key if key.startswith("/") else f"{group.name.rstrip('/')}/{key}"
        raise CaptureError(f"{what}: cannot read {path}{hint}") from None


def _resolve(f: h5py.File, name: str, what: str) -> list[h5py.Dataset]:
    """The datasets holding ``name``'s frames, in order: the dataset itself, or the Eiger
    layout's ``NAME_000001, NAME_000002, ...`` (also as the members of a group)."""
    if name in f:  # true for a link too, even one to a missing file
        obj = _member(f, name, what)
        if isinstance(obj, h5py.Dataset):
            return [obj]
        group, prefix = obj, None
    else:
        parent, _, base = name.rstrip("/").rpartition("/")
        group = f.get(parent or "/")
        prefix = base
        if not isinstance(group, h5py.Group):
            raise CaptureError(f"{what}: no dataset {name}")
    parts = []
    for key in group:  # names only: this does not follow (possibly broken) external links
        m = _EIGER_PART.match(key)
        if m and (prefix is None or m["base"] == prefix):
            parts.append((int(m["n"]), key))
    if not parts:
        raise CaptureError(
            f"{what}: {name} is neither a dataset nor the first of data files "
            f"{name.rstrip('/')}_000001, ..."
        )
    out = []
    for _, key in sorted(parts):
        obj = _member(group, key, what)
        if not isinstance(obj, h5py.Dataset):
            raise CaptureError(f"{what}: {obj.name} is not a dataset")
        out.append(obj)
    return out


def _direct_compression(ds: h5py.Dataset) -> str | None:
    """``"bslz4"`` when ``ds``'s chunks are single frames stored bitshuffle+LZ4 alone: each chunk
    is then, byte for byte, what a detector stream carries for the frame."""
    if ds.chunks is None or ds.chunks[0] != 1 or tuple(ds.chunks[1:]) != ds.shape[1:]:
        return None
    if ds.dtype.byteorder == ">":  # streams carry little-endian pixels
        return None
    plist = ds.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return None
    code, _flags, cd_values, _name = plist.get_filter(0)
    if code == BITSHUFFLE_FILTER and len(cd_values) > 4 and cd_values[4] == _BITSHUFFLE_LZ4:
        return "bslz4"
    return None


def _missing_filters(ds: h5py.Dataset) -> list[str]:
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, _cd, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            out.append(f"{code} ({name.decode(errors='replace')})" if name else str(code))
    return out


@dataclass(frozen=True)
class _Frame:
    """One frame's bytes as they travel: a compressed chunk, or the uncompressed pixels."""

    buffer: Any
    compression: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    type_name: str  # dtype.name, looked up once per dataset: numpy computes it on every call


def _check_readable(ds: h5py.Dataset, what: str) -> None:
    """Refuse, before the replay starts, frames that HDF5 would have to decode without the
    filter plugin for it."""
    if _direct_compression(ds) is not None or not _missing_filters(ds):
        return
    _register_filters()
    missing = _missing_filters(ds)
    if missing:
        raise CaptureError(
            f"{what}: {ds.name} needs HDF5 filter(s) {', '.join(missing)}; pip install hdf5plugin"
        )


def _block_frames(ds: h5py.Dataset) -> int:
    """How many frames to read at once when HDF5 decodes them: whole chunks (each is then
    decoded once), up to about BLOCK_BYTES (one read per frame costs more than the copy)."""
    frame_bytes = max(1, math.prod(ds.shape[1:]) * ds.dtype.itemsize)
    fit = max(1, BLOCK_BYTES // frame_bytes)
    if ds.chunks is None:
        return fit
    per_chunk = ds.chunks[0]
    return max(per_chunk, fit // per_chunk * per_chunk)


def _frames(parts: Sequence[h5py.Dataset]) -> Iterator[_Frame]:
    for ds in parts:
        direct = _direct_compression(ds)
        shape = tuple(ds.shape[1:])
        dtype = ds.dtype.newbyteorder("<") if ds.dtype.byteorder == ">" else ds.dtype
        name = dtype.name
        if direct is not None:
            origin = (0,) * len(shape)
            for index in range(ds.shape[0]):
                try:
                    mask, chunk = ds.id.read_direct_chunk((index, *origin))
                except (KeyError, OSError, ValueError):
                    # Never written: HDF5 gives the fill value.
                    array = np.ascontiguousarray(ds[index], dtype=dtype)
                    yield _Frame(array.reshape(-1).view(np.uint8).data, "none", shape, dtype, name)
                    continue
                # A set mask bit means HDF5 stored this chunk unfiltered.
                yield _Frame(chunk, "none" if mask & 1 else direct, shape, dtype, name)
            continue
        step = _block_frames(ds)
        for start in range(0, ds.shape[0], step):
            block = np.ascontiguousarray(ds[start : start + step], dtype=dtype)
            for frame in block:
                yield _Frame(frame.reshape(-1).view(np.uint8).data, "none", shape, dtype, name)


# -- dressing frames as stream messages --------------------------------------------------------


def _stins(spec: Hdf5Spec, count: int, frames: Iterator[_Frame]) -> Iterator[list[Any]]:
    yield stream1.build_header(filename=str(spec.path), msg_number=0)
    for index, frame in enumerate(frames):
        head = {
            "htype": "image",
            "frame": index,
            "shape": list(frame.shape),
            "type": frame.type_name,
            "compression": frame.compression,
            "msg_number": index + 1,
        }
        yield [json.dumps(head).encode(), frame.buffer]
    yield stream1.build_end(count + 1)


def _stream2(spec: Hdf5Spec, count: int, frames: Iterator[_Frame]) -> Iterator[list[Any]]:
    series = spec.path.name
    first = True
    for index, frame in enumerate(frames):
        if first:
            size = frame.shape if len(frame.shape) == 2 else (0, 0)
            yield dectris_stream2.build_start(
                series_unique_id=series,
                image_size=(int(size[0]), int(size[1])),
                number_of_images=count,
            )
            first = False
        tag = _TYPED_TAG.get(frame.dtype.str if frame.dtype.itemsize > 1 else frame.dtype.str[1:])
        if tag is None:
            raise CaptureError(f"{spec.path}: stream v2 has no typed array for {frame.dtype}")
        payload: Any = bytes(frame.buffer)
        if frame.compression == "bslz4":
            payload = cbor2.CBORTag(
                TAG_DECTRIS_COMPRESSION, ["bslz4", frame.dtype.itemsize, payload]
            )
        image = cbor2.CBORTag(TAG_MULTI_DIM, [list(frame.shape), cbor2.CBORTag(tag, payload)])
        fields = {
            "type": "image",
            "series_id": 1,
            "series_unique_id": series,
            "image_id": index,
            "data": {"threshold_1": image},
        }
        yield [cbor2.dumps(cbor2.CBORTag(TAG_SELF_DESCRIBE, fields))]
    if first:
        yield dectris_stream2.build_start(series_unique_id=series, number_of_images=0)
    yield dectris_stream2.build_end(series_unique_id=series)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _pcap(spec: Hdf5Spec, columns: dict[str, np.ndarray]) -> Iterator[list[Any]]:
    arm = datetime.fromtimestamp(spec.path.stat().st_mtime, tz=timezone.utc)
    yield pcap.build_start(message_id=1, arm_time=arm)
    count = len(next(iter(columns.values())))
    for i in range(count):
        row = {"message_id": i + 2, "message_type": "data", "version": 1, "frame_number": i}
        row.update({name: _scalar(col[i]) for name, col in columns.items()})
        yield [json.dumps(row).encode()]
    yield pcap.build_end(count + 2)


def _sardana(spec: Hdf5Spec, columns: dict[str, np.ndarray]) -> Iterator[list[Any]]:
    count = len(next(iter(columns.values())))
    yield sardana.build_data_description(
        motors=list(columns),
        counters=[],
        title=f"replay of {spec.path.name}",
        total_scan_intervals=max(count - 1, 0),
        scanfile=(spec.path.name,),
    )
    for i in range(count):
        values = {name: _scalar(col[i]) for name, col in columns.items()}
        yield sardana.build_record_data(i, values, timestamp=float(i))
    yield sardana.build_record_end()


@dataclass
class Hdf5Source:
    """Datasets of one HDF5 file as one stream (see the module docstring)."""

    spec: Hdf5Spec
    streams: tuple[str, ...] = ()
    drops: DropCounter = field(default_factory=DropCounter)
    truncated: str | None = None
    protocol: str = ""
    frames: int = 0

    def __post_init__(self) -> None:
        self.streams = (self.spec.stream,)
        with self._open() as f:
            parts = [self._parts(f, name) for name in self.spec.datasets]
            ndims = {ds.ndim for group in parts for ds in group}
            if ndims == {1}:
                self.protocol = self._protocol(SCALAR_PROTOCOLS)
                lengths = {
                    name: sum(ds.shape[0] for ds in group)
                    for name, group in zip(self.spec.datasets, parts, strict=True)
                }
                if len(set(lengths.values())) > 1:
                    detail = ", ".join(f"{n}: {k}" for n, k in lengths.items())
                    raise CaptureError(f"{self.spec.path}: datasets differ in length ({detail})")
                fields = [name.rstrip("/").rpartition("/")[2] for name in self.spec.datasets]
                if len(set(fields)) != len(fields):
                    raise CaptureError(
                        f"{self.spec.path}: two datasets end in the same name ({', '.join(fields)})"
                    )
                taken = sorted(set(fields) & RESERVED[self.protocol])
                if taken:
                    raise CaptureError(
                        f"{self.spec.path}: every {self.protocol} message has a field "
                        f"{', '.join(taken)} of its own; give the dataset with the other scalar "
                        f"protocol ({' or '.join(SCALAR_PROTOCOLS)})"
                    )
                self.frames = next(iter(lengths.values()))
            elif min(ndims) >= 2:
                self.protocol = self._protocol(FRAME_PROTOCOLS)
                if len(parts) != 1:
                    raise CaptureError(f"{self.spec.path}: one frame dataset per stream")
                shapes = {(ds.shape[1:], ds.dtype) for ds in parts[0]}
                if len(shapes) > 1:
                    raise CaptureError(
                        f"{self.spec.path}: the data files' frames differ in shape or type"
                    )
                for ds in parts[0]:
                    _check_readable(ds, str(self.spec.path))
                self.frames = sum(ds.shape[0] for ds in parts[0])
            else:
                raise CaptureError(
                    f"{self.spec.path}: give either one dataset of frames (2 or more dimensions) "
                    "or datasets of one value per point (1 dimension), not a mix"
                )

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.spec.path, "r")
        except FileNotFoundError:
            raise CaptureError(f"{self.spec.path}: no such HDF5 file") from None
        except OSError as exc:
            raise CaptureError(f"{self.spec.path}: cannot open as HDF5: {exc}") from None

    def _parts(self, f: h5py.File, name: str) -> list[h5py.Dataset]:
        parts = _resolve(f, name, str(self.spec.path))
        for ds in parts:
            if ds.dtype.kind not in "biuf" or ds.ndim == 0:
                raise CaptureError(
                    f"{self.spec.path}: {ds.name} is {ds.dtype} of shape {ds.shape}, "
                    "not numbers with one entry per point"
                )
        return parts

    def _protocol(self, allowed: tuple[str, ...]) -> str:
        if self.spec.protocol is None:
            return allowed[0]
        try:
            typ = get_protocol(self.spec.protocol).typ
        except KeyError as exc:
            raise CaptureError(f"{self.spec.path}: {exc.args[0]}") from None
        if typ not in allowed:
            raise CaptureError(
                f"{self.spec.path}: these datasets can be sent as {' or '.join(allowed)}, not {typ}"
            )
        return typ

    def events(self) -> Iterator[tuple[int, dict[str, StreamData]]]:
        """Start message, one event per frame or point, end message; the file is read as the
        events are taken (a frame, or a block of frames HDF5 decodes, at a time)."""
        stream, typ = self.spec.stream, self.protocol
        with self._open() as f:
            parts = [self._parts(f, name) for name in self.spec.datasets]
            messages: Iterator[list[Any]]
            if typ in SCALAR_PROTOCOLS:
                # Scan columns are small: read each whole, once.
                columns = {
                    name.rstrip("/").rpartition("/")[2]: np.concatenate([ds[()] for ds in group])
                    for name, group in zip(self.spec.datasets, parts, strict=True)
                }
                messages = (_pcap if typ == pcap.TYP else _sardana)(self.spec, columns)
            else:
                frames = _frames(parts[0])
                build = _stins if typ == stream1.TYP else _stream2
                messages = build(self.spec, self.frames, frames)
            for number, message in enumerate(messages):
                yield number, {stream: StreamData(typ, message)}
