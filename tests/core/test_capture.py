from __future__ import annotations

import gzip
import io
import pickle
import re
from pathlib import Path

import cbor2
import pytest

from tango_dranspose.core import capture
from tango_dranspose.core.capture import (
    CaptureError,
    DumpWriter,
    TruncatedCapture,
    capture_kind,
    merge_dumps,
    read_dump,
    read_pickle_dump,
    read_raw_capture,
    write_raw_capture,
)
from tango_dranspose.core.events import StreamData


def write_dump(path: Path, stream: str, events: range) -> None:
    with DumpWriter(path) as w:
        for i in events:
            w.write(i, {stream: StreamData("STINS", [f'{{"n": {i}}}'.encode(), b"x" * i])})


def test_dump_round_trip_plain_and_gzip(tmp_path: Path) -> None:
    for name in ("d.cbors", "d.cbors.gz"):
        path = tmp_path / name
        write_dump(path, "cam", range(5))
        recs = list(read_dump(path))
        assert [r.event_number for r in recs] == list(range(5))
        assert recs[3].streams["cam"].frames == [b'{"n": 3}', b"xxx"]
        assert recs[0].created_at is not None
        assert capture_kind(path) == "dump"


def test_old_dumps_without_self_describe_tag_and_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "old.cbors"
    with open(path, "wb") as f:
        for i in range(3):
            body = {"s": cbor2.CBORTag(42878, ["STINS", [b"a", b"b"]])}
            cbor2.dump(cbor2.CBORTag(42877, [i, body]), f)
    recs = list(read_dump(path))
    assert [r.event_number for r in recs] == [0, 1, 2]
    assert recs[2].created_at is None
    assert recs[2].streams["s"].typ == "STINS"


def test_truncated_dump_yields_complete_records_then_says_where(tmp_path: Path) -> None:
    path = tmp_path / "t.cbors"
    write_dump(path, "cam", range(6))
    blob = path.read_bytes()
    path.write_bytes(blob[:-7])
    got = []
    with pytest.raises(TruncatedCapture) as err:
        for rec in read_dump(path):
            got.append(rec.event_number)
    assert got == [0, 1, 2, 3, 4]
    assert err.value.records == 5
    assert "truncated after 5 complete records" in str(err.value)


def test_merge_by_event_number(tmp_path: Path) -> None:
    write_dump(tmp_path / "a.cbors", "a", range(0, 4))
    write_dump(tmp_path / "b.cbors", "b", range(0, 4))
    merged = list(merge_dumps([tmp_path / "a.cbors", tmp_path / "b.cbors"]))
    assert [r.event_number for r in merged] == [0, 1, 2, 3]
    assert all(set(r.streams) == {"a", "b"} for r in merged)


def test_raw_capture_round_trip_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "raw.cbors.gz"
    assert write_raw_capture(path, [[b"a"], [b"b", b"c"]]) == 2
    assert list(read_raw_capture(path)) == [[b"a"], [b"b", b"c"]]
    assert capture_kind(path) == "raw"
    with gzip.open(path) as f:
        assert f.read(1)  # really gzip


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "x.cbors"
    path.write_bytes(cbor2.dumps({"a": 1}))
    with pytest.raises(CaptureError, match="neither an ingester dump nor a raw capture"):
        capture_kind(path)


class Event:  # stands in for a pickled dranspose object
    def __init__(self, n: int) -> None:
        self.event_number = n
        self.streams = {"s": {"typ": "STINS", "frames": [b"f"]}}


def test_pickle_dumps_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "d.pkls"
    with open(path, "wb") as f:
        for i in range(2):
            pickle.dump(
                {"event_number": i, "streams": {"s": {"typ": "STINS", "frames": [b"f"]}}}, f
            )
    with pytest.raises(CaptureError, match="trusted"):
        list(read_pickle_dump(path, trust=False))
    recs = list(read_pickle_dump(path, trust=True))
    assert [r.event_number for r in recs] == [0, 1]
    assert recs[1].streams["s"].frames == [b"f"]


@pytest.mark.captures
def test_every_shared_capture_reads_completely(captures: Path) -> None:
    counts = {}
    for path in sorted(captures.rglob("*.cbor*")):
        kind = capture_kind(path)
        reader = read_dump if kind == "dump" else read_raw_capture
        counts[path.name.split("-ingester")[0]] = sum(1 for _ in reader(path))
    assert counts["dump_xrd.cbors"] == 11
    assert counts["pcap-zmq.cbors"] == 102
    assert counts["dumporca"] == counts["dumpsardana"] == counts["dumppcap_rotRAW"] == 13
    assert counts["maui-02-sequential-3.cbor.gz"] == 10


def _records(path: Path) -> list[bytes]:
    """The encoded records of a plain capture, one bytes object each."""
    blob = path.read_bytes()
    view = io.BytesIO(blob)
    decoder = cbor2.CBORDecoder(view)
    out, start = [], 0
    while start < len(blob):
        decoder.decode()
        out.append(blob[start : view.tell()])
        start = view.tell()
    return out


def test_gzip_is_read_forward_only_across_window_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records straddle the read-ahead window and are larger than it; no backward seek."""
    plain, packed = tmp_path / "d.cbors", tmp_path / "d.cbors.gz"
    write_dump(plain, "cam", range(300))
    write_dump(packed, "cam", range(300))
    expected = [(r.event_number, r.streams["cam"].frames) for r in read_dump(plain)]

    def no_seek(self: gzip.GzipFile, *args: object) -> int:
        raise AssertionError("the gzip stream was seeked")

    monkeypatch.setattr(gzip.GzipFile, "seek", no_seek)
    monkeypatch.setattr(capture, "_CHUNK", 97)  # records are up to ~400 bytes
    got = [(r.event_number, r.streams["cam"].frames) for r in read_dump(packed)]
    assert got == expected


def test_truncated_gzip_yields_every_complete_record(tmp_path: Path) -> None:
    plain = tmp_path / "d.cbors"
    write_dump(plain, "cam", range(50))
    cut = tmp_path / "cut.cbors.gz"
    whole = gzip.compress(plain.read_bytes())
    cut.write_bytes(whole[: len(whole) // 2])
    got = []
    with pytest.raises(TruncatedCapture) as err:
        for rec in read_dump(cut):
            got.append(rec.event_number)
    assert got == list(range(len(got))) and 0 < len(got) < 50
    assert err.value.records == len(got)
    assert "of the uncompressed data" in str(err.value)


def test_a_malformed_record_in_the_middle_is_an_error_not_a_truncation(tmp_path: Path) -> None:
    path = tmp_path / "d.cbors"
    write_dump(path, "cam", range(5))
    recs = _records(path)
    recs[2] = b"\xff" + recs[2][1:]  # a break code where a record must start
    path.write_bytes(b"".join(recs))
    got = []
    with pytest.raises(CaptureError) as err:
        for rec in read_dump(path):
            got.append(rec.event_number)
    assert not isinstance(err.value, TruncatedCapture)
    assert got == [0, 1]
    assert f"{path} record 2 (at byte {len(recs[0]) + len(recs[1])} of the file)" in str(err.value)
    assert "not valid CBOR" in str(err.value)


def _dump_item(number: object, streams: object) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(42877, [number, streams]))


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (_dump_item(-3, {}), "the event number is -3"),
        (_dump_item(True, {}), "the event number is True"),
        (_dump_item(1, [1, 2]), "event 1 has no map of streams"),
        (_dump_item(1, {"s": cbor2.CBORTag(42878, ["STINS", "abc"])}), "not byte strings"),
        (_dump_item(1, {"s": cbor2.CBORTag(42878, ["STINS", ["abc"]])}), "not byte strings"),
        (_dump_item(1, {"s": cbor2.CBORTag(42878, ["STINS", 5])}), "not byte strings"),
        (_dump_item(1, {"s": cbor2.CBORTag(42878, [b"STINS", [b"x"]])}), "no protocol tag"),
        (_dump_item(1, {b"s": cbor2.CBORTag(42878, ["STINS", [b"x"]])}), "is malformed"),
        (_dump_item(1, {"s": ["STINS", [b"x"]]}), "is malformed"),
        (_dump_item(0, {}), "event 0 comes after event 0"),
        (b"\x81" * 5000 + b"\x01", "record 1"),
        (b"\xc1\x1b\xff\xff\xff\xff\xff\xff\xff\xff", "not valid CBOR"),
    ],
    ids=[
        "negative-number",
        "bool-number",
        "streams-not-a-map",
        "frames-a-string",
        "frame-a-string",
        "frames-an-int",
        "typ-bytes",
        "name-bytes",
        "stream-untagged",
        "repeated-event",
        "deeply-nested",
        "bad-timestamp",
    ],
)
def test_malformed_dump_records_name_the_file_and_record(
    tmp_path: Path, record: bytes, words: str
) -> None:
    path = tmp_path / "d.cbors"
    path.write_bytes(_dump_item(0, {}) + record + _dump_item(5, {}))
    with pytest.raises(CaptureError) as err:
        list(read_dump(path))
    assert not isinstance(err.value, TruncatedCapture)
    assert f"{path} record 1" in str(err.value) and words in str(err.value)


def test_corrupt_gzip_data_is_an_error_after_the_readable_records(tmp_path: Path) -> None:
    plain = tmp_path / "d.cbors"
    write_dump(plain, "cam", range(20))
    blob = bytearray(gzip.compress(plain.read_bytes()))
    blob[-6] ^= 0xFF  # the CRC of the member: the data decompresses, the check fails
    path = tmp_path / "d.cbors.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(CaptureError, match=r"after 20 complete records\): CRC check failed"):
        list(read_dump(path))


def test_raw_capture_records_must_be_arrays_of_byte_strings(tmp_path: Path) -> None:
    path = tmp_path / "raw.cbors"
    path.write_bytes(cbor2.dumps([b"a"]) + cbor2.dumps([b"a", "text"]))
    with pytest.raises(CaptureError, match=re.escape(f"{path} record 1: a raw capture record")):
        list(read_raw_capture(path))


def test_malformed_pickle_dump_records_are_errors_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "d.pkls"
    good = pickle.dumps({"event_number": 0, "streams": {"s": {"typ": "STINS", "frames": [b"f"]}}})
    bad_frames = pickle.dumps({"event_number": 1, "streams": {"s": {"typ": "X", "frames": 7}}})
    path.write_bytes(good + bad_frames)
    with pytest.raises(CaptureError, match="record 1: stream 's' has no frames"):
        list(read_pickle_dump(path, trust=True))
    path.write_bytes(good + b"\x80\x04\xff" + good)  # protocol 4, then an unknown opcode
    with pytest.raises(CaptureError, match=r"record 1 .*not a readable pickle") as err:
        list(read_pickle_dump(path, trust=True))
    assert not isinstance(err.value, TruncatedCapture)
    path.write_bytes(good + good[:-5])
    with pytest.raises(TruncatedCapture, match="after 1 complete records"):
        list(read_pickle_dump(path, trust=True))
