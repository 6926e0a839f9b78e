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
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cbor2

from tango_dranspose.core.events import StreamData, frame_bytes

TAG_SELF_DESCRIBE = 55799
TAG_EVENT = 42877
TAG_STREAM = 42878


class CaptureError(ValueError):
    """A capture file that cannot be read as what it claims to be."""


class TruncatedCapture(CaptureError):
    """The file ends inside a record; every record before it was read."""

    def __init__(
        self, path: str, records: int, offset: int, detail: str, *, compressed: bool | None = None
    ) -> None:
        if compressed is None:
            compressed = path.endswith(".gz")
        super().__init__(
            f"{path}: truncated after {records} complete records "
            f"(at byte {offset} of the {'uncompressed ' if compressed else ''}data): {detail}"
        )
        self.records = records
        self.offset = offset


@dataclass(slots=True)
class DumpRecord:
    """One event of an ingester dump."""

    event_number: int
    streams: dict[str, StreamData]
    created_at: dt.datetime | None = None


def _open(path: str | os.PathLike[str]) -> io.BufferedIOBase:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the reader's finally
    except OSError as exc:
        raise CaptureError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def _eof(stream: io.BufferedIOBase) -> bool:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return not peek(1)
    pos = stream.tell()
    more = stream.read(1)
    stream.seek(pos)
    return not more


# Bytes read ahead of the decoder. A record larger than this makes the window grow (doubling,
# so a large record is decoded a logarithmic number of times, not once per chunk).
_CHUNK = 1 << 20


class _ForwardReader:
    """Reads a capture strictly forward, in chunks, remembering how and where it ended.

    cbor2 6.x reads ahead and seeks back after each item; on a ``GzipFile`` every seek back
    past its buffer decompresses again from the start, which made reading quadratic in the
    file size. Decoding from an in-memory window of decompressed bytes keeps it linear.
    """

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self.stream = stream
        self.ended = False
        self.cut_short: str | None = None  # why the compressed data stopped early
        self.failure: str | None = None  # why the data could not be read on

    def read(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        # read1 returns what one step of decompression gives, so when the gzip data is cut
        # short the EOFError loses nothing that was already decompressed.
        while got < size and not self.ended:
            try:
                part = self.stream.read1(size - got)
            except EOFError as exc:
                self.ended = True
                self.cut_short = str(exc) or "the compressed data ends early"
                break
            except (OSError, zlib.error) as exc:
                # Kept for after the records already read: they are yielded first.
                self.ended = True
                self.failure = str(exc) or type(exc).__name__
                break
            if not part:
                self.ended = True
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)


def _where(name: str, record: int, offset: int, compressed: bool) -> str:
    data = "uncompressed data" if compressed else "file"
    return f"{name} record {record} (at byte {offset} of the {data})"


def iter_cbor(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Every top-level CBOR item of a file (plain or gzip), decoded strictly forward.

    A record that is not valid CBOR raises :class:`CaptureError` naming the file and the
    record; a file that ends inside a record raises :class:`TruncatedCapture` after every
    complete record was yielded.
    """
    name = os.fspath(path)
    stream = _open(path)
    reader = _ForwardReader(stream)
    compressed = isinstance(stream, gzip.GzipFile)
    window = b""  # decompressed bytes from the start of the next record on
    base = 0  # offset of window[0] in the (decompressed) data
    count = 0
    try:
        while True:
            window += reader.read(max(_CHUNK, len(window)))
            view = io.BytesIO(window)
            decoder = cbor2.CBORDecoder(view)
            pos = 0
            incomplete: str | None = None
            while pos < len(window):
                try:
                    item = decoder.decode()
                except cbor2.CBORDecodeEOF as exc:
                    incomplete = str(exc)  # the record goes on beyond the window
                    break
                except RecursionError:
                    raise CaptureError(
                        f"{_where(name, count, base + pos, compressed)}: nested too deeply"
                    ) from None
                except Exception as exc:
                    # The decoder's errors differ between cbor2 versions and semantic tags
                    # (dates, regexps, addresses) raise their own: any of them means this
                    # record is malformed, and the user needs the record, not a traceback.
                    raise CaptureError(
                        f"{_where(name, count, base + pos, compressed)}: not valid CBOR: "
                        f"{str(exc) or type(exc).__name__}"
                    ) from None
                pos = view.tell()
                count += 1
                yield item
            window = window[pos:]
            base += pos
            if reader.ended:
                if reader.failure:
                    data = "uncompressed data" if compressed else "file"
                    raise CaptureError(
                        f"{name}: cannot read past byte {base + len(window)} of the {data} "
                        f"(after {count} complete records): {reader.failure}"
                    )
                if window:
                    raise TruncatedCapture(
                        name, count, base, incomplete or "incomplete record", compressed=compressed
                    )
                if reader.cut_short:
                    raise TruncatedCapture(
                        name, count, base, reader.cut_short, compressed=compressed
                    )
                return
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
    # bool is an int to Python, and a flipped bit turns an unsigned integer into a negative.
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise CaptureError(f"{where}: the event number is {number!r}, not a count")
    if not isinstance(streams_raw, Mapping):
        raise CaptureError(f"{where}: event {number} has no map of streams")
    streams: dict[str, StreamData] = {}
    for name, tagged in streams_raw.items():
        sd = _untag(tagged, TAG_STREAM)
        if not isinstance(name, str) or not isinstance(sd, list | tuple) or len(sd) != 2:
            raise CaptureError(f"{where}: stream {name!r} of event {number} is malformed")
        typ, frames = sd
        if not isinstance(typ, str):
            raise CaptureError(f"{where}: stream {name!r} of event {number} has no protocol tag")
        if not isinstance(frames, list | tuple) or not all(
            isinstance(f, bytes | bytearray) for f in frames
        ):
            raise CaptureError(
                f"{where}: the frames of stream {name!r} of event {number} are not byte strings"
            )
        streams[name] = StreamData(typ=typ, frames=[bytes(f) for f in frames])
    return DumpRecord(number, streams, created if isinstance(created, dt.datetime) else None)


def read_dump(path: str | os.PathLike[str]) -> Iterator[DumpRecord]:
    """The events of one ingester dump, in file order (which is event order)."""
    name = os.fspath(path)
    previous = -1
    for index, item in enumerate(iter_cbor(path)):
        record = _record_from_item(item, f"{name} record {index}")
        # Merging dumps relies on the order; a record out of it is a corrupt event number.
        if record.event_number <= previous:
            raise CaptureError(
                f"{name} record {index}: event {record.event_number} comes after event "
                f"{previous}; a dump holds each event once, in order"
            )
        previous = record.event_number
        yield record


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
        try:
            streams[str(name)] = StreamData(
                typ=str(field(sd, "typ")), frames=[frame_bytes(f) for f in frames]
            )
        except TypeError as exc:  # frames not iterable, or not frames
            raise CaptureError(f"{where}: stream {name!r} has no frames: {exc}") from None
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

    name = os.fspath(path)
    stream = _open(path)
    try:
        index = 0
        while True:
            offset = stream.tell()
            try:
                if _eof(stream):
                    break
                obj = _Unpickler(stream).load()  # trusted: the user passed --trust-pickle
            except EOFError as exc:
                raise TruncatedCapture(name, index, offset, str(exc) or "ends early") from None
            except (OSError, zlib.error) as exc:
                raise CaptureError(f"{name}: cannot read record {index}: {exc}") from None
            except Exception as exc:
                # A corrupt pickle fails in many ways (bad opcode, memo, argument types);
                # each means this record is malformed.
                if "truncated" in str(exc):
                    raise TruncatedCapture(name, index, offset, str(exc)) from None
                raise CaptureError(
                    f"{name} record {index} (at byte {offset}): not a readable pickle: "
                    f"{str(exc) or type(exc).__name__}"
                ) from None
            yield _record_from_pickled(obj, f"{name} record {index}")
            index += 1
    finally:
        stream.close()
