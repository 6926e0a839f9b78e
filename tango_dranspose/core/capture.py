"""Capture files: ingester dumps (one record per event) and raw upstream captures.

Formats (see docs/capture-files.md):

* ingester dump: ``Tag(55799)?(Tag(42877, [event_number, {stream: Tag(42878, [typ,
  [frame, ...]])}, created_at?]))`` per event; 55799 and ``created_at`` are optional.
* raw upstream capture: an untagged CBOR array of byte strings per upstream message.

Both may be gzip-compressed. Works with cbor2 5.x and 6.x (6.x decodes arrays inside tags as
tuples and maps as frozendicts, and ends with ``CBORDecodeEOF``). A truncated file yields every
complete record, then raises :class:`TruncatedCapture` saying where it stopped.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import cbor2

from tango_dranspose.core.events import StreamData, frame_bytes

TAG_SELF_DESCRIBE = 55799
TAG_EVENT = 42877
TAG_STREAM = 42878


class CaptureError(ValueError):
    """A capture file that cannot be read as what it claims to be."""


class TruncatedCapture(CaptureError):
    """The file ends inside a record; every record before it was read."""

    def __init__(self, path: str, records: int, offset: int, detail: str) -> None:
        super().__init__(
            f"{path}: truncated after {records} complete records "
            f"(at byte {offset} of the {'uncompressed ' if path.endswith('.gz') else ''}data): "
            f"{detail}"
        )
        self.records = records
        self.offset = offset


@dataclass(slots=True)
class DumpRecord:
    """One event of an ingester dump."""

    event_number: int
    streams: dict[str, StreamData]
    created_at: dt.datetime | None = None


def _open(path: str | os.PathLike[str]) -> BinaryIO:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the reader's finally
    head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _eof(stream: IO[bytes]) -> bool:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return not peek(1)
    pos = stream.tell()
    more = stream.read(1)
    stream.seek(pos)
    return not more


def iter_cbor(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Every top-level CBOR item of a file (plain or gzip)."""
    name = os.fspath(path)
    stream = _open(path)
    try:
        decoder = cbor2.CBORDecoder(stream)
        count = 0
        while not _eof(stream):
            offset = stream.tell()
            try:
                item = decoder.decode()
            except (EOFError, cbor2.CBORDecodeError) as exc:
                raise TruncatedCapture(
                    name, count, offset, str(exc) or type(exc).__name__
                ) from None
            except (OSError, gzip.BadGzipFile) as exc:
                raise TruncatedCapture(name, count, offset, str(exc)) from None
            count += 1
            yield item
    except (OSError, gzip.BadGzipFile) as exc:
        raise CaptureError(f"{name}: cannot read: {exc}") from None
    finally:
        stream.close()


def _untag(item: Any, tag: int) -> Any:
    if isinstance(item, cbor2.CBORTag) and item.tag == tag:
        return item.value
    return None


def _record_from_item(item: Any, where: str) -> DumpRecord:
    inner = _untag(item, TAG_SELF_DESCRIBE)
    if inner is not None:
        item = inner
    value = _untag(item, TAG_EVENT)
    if value is None or not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise CaptureError(f"{where}: not an ingester dump record (tag {TAG_EVENT})")
    number, streams_raw = value[0], value[1]
    created = value[2] if len(value) == 3 else None
    if not isinstance(number, int) or not isinstance(streams_raw, Mapping):
        raise CaptureError(f"{where}: malformed event record")
    streams: dict[str, StreamData] = {}
    for name, tagged in streams_raw.items():
        sd = _untag(tagged, TAG_STREAM)
        if not isinstance(sd, list | tuple) or len(sd) != 2:
            raise CaptureError(f"{where}: stream {name!r} of event {number} is malformed")
        typ, frames = sd
        streams[str(name)] = StreamData(typ=str(typ), frames=[bytes(f) for f in frames])
    return DumpRecord(number, streams, created if isinstance(created, dt.datetime) else None)


def read_dump(path: str | os.PathLike[str]) -> Iterator[DumpRecord]:
    """The events of one ingester dump, in file order."""
    name = os.fspath(path)
    for index, item in enumerate(iter_cbor(path)):
        yield _record_from_item(item, f"{name} record {index}")


def read_raw_capture(path: str | os.PathLike[str]) -> Iterator[list[bytes]]:
    """The upstream messages of a raw capture: each a list of frames."""
    name = os.fspath(path)
    for index, item in enumerate(iter_cbor(path)):
        if not isinstance(item, list | tuple) or not all(
            isinstance(f, bytes | bytearray) for f in item
        ):
            raise CaptureError(
                f"{name} record {index}: a raw capture record is an array of byte strings"
            )
        yield [bytes(f) for f in item]


def capture_kind(path: str | os.PathLike[str]) -> str:
    """``"dump"`` or ``"raw"``, from the first record; ``"empty"`` for an empty file."""
    for item in iter_cbor(path):
        inner = _untag(item, TAG_SELF_DESCRIBE)
        item = inner if inner is not None else item
        if isinstance(item, cbor2.CBORTag) and item.tag == TAG_EVENT:
            return "dump"
        if isinstance(item, list | tuple):
            return "raw"
        raise CaptureError(f"{os.fspath(path)}: neither an ingester dump nor a raw capture")
    return "empty"


def merge_dumps(paths: Iterable[str | os.PathLike[str]]) -> Iterator[DumpRecord]:
    """Merge several dumps of one scan (one per ingester) by event number.

    Each dump is in event order, so this streams: memory holds one record per file.
    """
    import heapq

    iters = [read_dump(p) for p in paths]
    heads: list[tuple[int, int, DumpRecord]] = []
    for idx, it in enumerate(iters):
        first = next(it, None)
        if first is not None:
            heads.append((first.event_number, idx, first))
    heapq.heapify(heads)
    current: DumpRecord | None = None
    while heads:
        number, idx, rec = heapq.heappop(heads)
        if current is not None and current.event_number == number:
            for name, data in rec.streams.items():
                current.streams.setdefault(name, data)
        else:
            if current is not None:
                yield current
            current = DumpRecord(number, dict(rec.streams), rec.created_at)
        nxt = next(iters[idx], None)
        if nxt is not None:
            heapq.heappush(heads, (nxt.event_number, idx, nxt))
    if current is not None:
        yield current


def _open_write(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "wb")  # type: ignore[return-value]
    return open(path, "wb")


class DumpWriter:
    """Writes ingester dump records (tagged, self-describing, with ``created_at``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] = _open_write(self.path)
        self._encoder = cbor2.CBOREncoder(self._file, timezone=dt.timezone.utc)
        self.records = 0

    def write(self, event_number: int, streams: Mapping[str, StreamData]) -> None:
        body = {
            name: cbor2.CBORTag(TAG_STREAM, [sd.typ, [frame_bytes(f) for f in sd.frames]])
            for name, sd in streams.items()
        }
        record = cbor2.CBORTag(
            TAG_SELF_DESCRIBE,
            cbor2.CBORTag(TAG_EVENT, [event_number, body, dt.datetime.now(dt.timezone.utc)]),
        )
        self._encoder.encode(record)
        self.records += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DumpWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_raw_capture(path: str | os.PathLike[str], messages: Iterable[Iterable[Any]]) -> int:
    """Write upstream messages as a raw capture; returns how many were written."""
    count = 0
    p = Path(path)
    with _open_write(p) as f:
        for message in messages:
            cbor2.dump([frame_bytes(frame) for frame in message], f)
            count += 1
    return count


class _PickledObject:
    """Stand-in for dranspose classes found in old pickle dumps (state kept as attributes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict_state, slots_state)
            state = next((s for s in state if isinstance(s, dict)), {})
        if isinstance(state, dict):
            inner = state.get("__dict__", state)
            if isinstance(inner, dict):
                self.__dict__.update(inner)


def _record_from_pickled(obj: Any, where: str) -> DumpRecord:
    def field(item: Any, name: str) -> Any:
        return item.get(name) if isinstance(item, dict) else getattr(item, name, None)

    number = field(obj, "event_number")
    raw_streams = field(obj, "streams")
    if not isinstance(number, int) or not isinstance(raw_streams, dict):
        raise CaptureError(f"{where}: not an event record")
    streams = {}
    for name, sd in raw_streams.items():
        frames = field(sd, "frames") or []
        streams[str(name)] = StreamData(
            typ=str(field(sd, "typ")), frames=[frame_bytes(f) for f in frames]
        )
    return DumpRecord(number, streams)


def read_pickle_dump(path: str | os.PathLike[str], *, trust: bool) -> Iterator[DumpRecord]:
    """Old ``*.pkls`` dumps: consecutive pickles. Unpickling runs code: trusted files only."""
    import pickle

    if not trust:
        raise CaptureError(f"{os.fspath(path)}: pickle dumps are read only when trusted")

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module.split(".")[0] in ("dranspose", "zmq"):
                return _PickledObject
            return super().find_class(module, name)

    stream = _open(path)
    try:
        index = 0
        while not _eof(stream):
            try:
                obj = _Unpickler(stream).load()  # trusted: the user passed --trust-pickle
            except (EOFError, pickle.UnpicklingError) as exc:
                raise TruncatedCapture(os.fspath(path), index, stream.tell(), str(exc)) from None
            yield _record_from_pickled(obj, f"{os.fspath(path)} record {index}")
            index += 1
    finally:
        stream.close()
