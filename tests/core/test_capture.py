from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import cbor2
import pytest

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
