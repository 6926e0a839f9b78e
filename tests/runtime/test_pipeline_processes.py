"""Tier 2: full scans through real service processes over ZeroMQ on 127.0.0.1.

One deployment (scheduler, two ingesters, workers w0/w1 tagged generic and dbg tagged debug,
a reducer) serves every test in turn, so the scans also run back to back on the same
processes. The test process plays the detectors: a PUSH socket per stream, bound on a free
port, replaying recorded captures or synthetic frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zmq

from tango_dranspose.core.capture import read_dump, read_raw_capture
from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.core.ledger import StreamLedger
from tango_dranspose.runtime.control import ControlClient
from tango_dranspose.streams.pcap import PCAPFramer
from tango_dranspose.streams.pcap import parse as parse_pcap
from tango_dranspose.streams.stream1 import Stream1Data, build_end, build_header, build_image
from tango_dranspose.streams.stream1 import parse as parse_stins
from tango_dranspose.streams.xspress3 import XspressFramer, XspressImage
from tango_dranspose.streams.xspress3 import parse as parse_xspress
from tests.runtime.procs import REPO, Proc

STREAMS = {
    "cam": "STINS",
    "xsp3": "xspress",
    "pcap": "PCAP",
    "orca": "STINS",
    "pcap_rot": "PCAP_RAW",
    "sardana": "sardana",
}
PAYLOADS = ["--payload-path", str(REPO)]


@dataclass
class Deployment:
    client: ControlClient
    sources: dict[str, zmq.Socket[Any]]
    results: Path
    procs: dict[str, Proc]

    def scan(
        self,
        tmap: dict[str, Any],
        feeds: dict[str, Sequence[Sequence[bytes]]],
        scan_id: str,
        parameters: dict[str, str] | None = None,
        record_dir: str | None = None,
        timeout: float = 60,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self.client.arm(tmap, scan_id=scan_id, parameters=parameters or {}, record_dir=record_dir)
        for stream, messages in feeds.items():
            for m in messages:
                self.sources[stream].send_multipart(list(m))
        status = self.client.wait(timeout)["scan"]
        assert status["state"] == "finished", status
        for stream, raw in status["ledger"].items():
            assert StreamLedger.model_validate(raw).balance() == 0, (stream, raw)
        with h5py.File(self.results / f"{scan_id}_processed.h5") as f:
            return status, read_tree(f)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    results = tmp_path_factory.mktemp("results")
    ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    sources: dict[str, zmq.Socket[Any]] = {}
    urls: dict[str, str] = {}
    for name in STREAMS:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 30_000)  # a test never blocks forever on a send
        sock.bind("tcp://127.0.0.1:0")
        sources[name] = sock
        urls[name] = "pull+" + sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    procs: dict[str, Proc] = {}
    try:
        procs["scheduler"] = Proc("serve", "scheduler", "--window", "8", name="scheduler")
        control = procs["scheduler"].expect("control")
        client_address = procs["scheduler"].expect("client")

        def stream_args(*names: str) -> list[str]:
            return [a for n in names for a in ("--stream", f"{n}:{STREAMS[n]}={urls[n]}")]

        procs["ing-a"] = Proc(
            "serve",
            "ingester",
            "--name",
            "ing-a",
            "--scheduler",
            control,
            *stream_args("cam", "xsp3", "pcap"),
            name="ing-a",
        )
        procs["ing-b"] = Proc(
            "serve",
            "ingester",
            "--name",
            "ing-b",
            "--scheduler",
            control,
            *stream_args("orca", "pcap_rot", "sardana"),
            name="ing-b",
        )
        for name, tags in (("w0", "generic"), ("w1", "generic"), ("dbg", "debug")):
            procs[name] = Proc(
                "serve",
                "worker",
                "--name",
                name,
                "--scheduler",
                control,
                "--tags",
                tags,
                "--worker-class",
                "tests.runtime.payloads:ProbeWorker",
                *PAYLOADS,
                name=name,
            )
        procs["reducer"] = Proc(
            "serve",
            "reducer",
            "--name",
            "reducer",
            "--scheduler",
            control,
            "--reducer-class",
            "tests.runtime.payloads:ColumnsReducer",
            "--output-dir",
            str(results),
            *PAYLOADS,
            name="reducer",
        )
        client = ControlClient(client_address)
        client.wait_for({"ingester": 2, "worker": 3, "reducer": 1}, 90)
        yield Deployment(client, sources, results, procs)
    finally:
        for p in procs.values():
            p.stop()
        ctx.destroy(0)


def generic(i: int) -> list[dict[str, Any]]:
    return [{"constraint": i}]


def rows_by_event(tree: dict[str, Any], worker: str | None = None) -> dict[int, dict[str, Any]]:
    out = {}
    for k, event in enumerate(tree["event"]):
        if worker is None or tree["worker"][k] == worker:
            out[int(event)] = {
                key: (v[k] if hasattr(v, "__len__") and not isinstance(v, str) else v)
                for key, v in tree.items()
                if key != "count"
            }
    return out


def synthetic_stins(n: int, seed: int) -> tuple[list[list[bytes]], list[float]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 1000, size=(16, 16), dtype=np.uint16) for _ in range(n)]
    msgs = [
        build_header("", 0),
        *(build_image(img, i, i + 1) for i, img in enumerate(images)),
        build_end(n + 1),
    ]
    return msgs, [float(img.sum()) for img in images]


@pytest.mark.captures
def test_xrd_capture_pairs_and_a_debug_copy(deployment: Deployment, captures: Path) -> None:
    records = list(read_dump(captures / "dump_xrd.cbors"))
    messages = [r.streams["xrd"].frames for r in records]
    sums = [
        float(p.data.astype(float).sum())
        for r in records
        if isinstance(p := parse_stins(r.streams["xrd"]), Stream1Data)
    ]
    cells = [
        [{"constraint": i // 2}] + ([{"constraint": None, "tags": ["debug"]}] if i % 4 == 0 else [])
        for i in range(9)
    ]
    status, tree = deployment.scan({"cam": cells}, {"cam": messages}, "xrd-pairs")
    generic_rows = {int(e): k for k, e in enumerate(tree["event"]) if tree["worker"][k] != "dbg"}
    values = [tree["value_cam"][generic_rows[e]] for e in range(1, 10)]
    np.testing.assert_allclose(values, sums)
    owner = {
        int(e): tree["worker"][k] for k, e in enumerate(tree["event"]) if tree["worker"][k] != "dbg"
    }
    for first in (1, 3, 5, 7):
        assert owner[first] == owner[first + 1]
    assert {owner[e] for e in range(1, 10)} == {"w0", "w1"}
    debug_frames = sorted(
        int(f) for k, f in enumerate(tree["frame"]) if tree["worker"][k] == "dbg" and f >= 0
    )
    assert debug_frames == [0, 4, 8]
    assert status["ledger"]["cam"]["delivered"] == 11


@pytest.mark.captures
def test_xspress3_multipart_capture(deployment: Deployment, captures: Path) -> None:
    messages = list(read_raw_capture(captures / "xspress3-multipart.cbors"))
    framer = XspressFramer()
    parsed = [parse_xspress(f.data) for m in messages for f in framer.feed(m)]
    spectra = [p.data for p in parsed if isinstance(p, XspressImage)]
    assert len(spectra) == 5 and spectra[0].shape == (4, 4096) and spectra[0].dtype == np.uint32
    status, tree = deployment.scan(
        {"xsp3": [generic(i % 2) for i in range(5)]}, {"xsp3": messages}, "xsp3"
    )
    data = [
        tree["value_xsp3"][k]
        for k, f in enumerate(tree["frame"])
        if f >= 0 and tree["streams"][k] == "xsp3"
    ]
    np.testing.assert_allclose(sorted(data), sorted(float(s.sum()) for s in spectra))
    assert status["ledger"]["xsp3"]["delivered"] == 7


@pytest.mark.captures
def test_pcap_rows_with_discards(deployment: Deployment, captures: Path) -> None:
    messages = list(read_raw_capture(captures / "pcap-zmq.cbors"))
    framer = PCAPFramer()
    rows = [parse_pcap(f.data) for m in messages for f in framer.feed(m)][1:-1]
    assert len(rows) == 1500
    cells = [[] if i % 10 == 9 else generic(i % 2) for i in range(1500)]
    status, tree = deployment.scan({"pcap": cells}, {"pcap": messages}, "pcap-rows")
    got = {
        int(f): v
        for f, v, w in zip(tree["frame"], tree["value_pcap"], tree["worker"], strict=True)
        if f >= 0
    }
    expected = {r.frame_number: float(r.energy) for i, r in enumerate(rows) if i % 10 != 9}
    assert got.keys() == expected.keys()
    np.testing.assert_allclose(
        [got[k] for k in sorted(got)], [expected[k] for k in sorted(expected)]
    )
    ledger = status["ledger"]["pcap"]
    assert (ledger["delivered"], ledger["discarded"]) == (1352, 150)
    assert status["completed_events"] == 1502


@pytest.mark.captures
def test_danmax_tomo_three_streams_one_event_per_point(
    deployment: Deployment, captures: Path
) -> None:
    dumps = {p.name.split("-ingester")[0]: p for p in (captures / "danmax-tomo").glob("*.cbors")}
    feeds = {
        "orca": [r.streams["orca"].frames for r in read_dump(dumps["dumporca"])],
        "pcap_rot": [r.streams["pcap_rot"].frames for r in read_dump(dumps["dumppcap_rotRAW"])],
        "sardana": [r.streams["sardana"].frames for r in read_dump(dumps["dumpsardana"])],
    }
    sums = [
        float(p.data.astype(float).sum())
        for r in read_dump(dumps["dumporca"])
        if isinstance(p := parse_stins(r.streams["orca"]), Stream1Data)
    ]
    tmap = {s: [generic(i) for i in range(11)] for s in feeds}
    status, tree = deployment.scan(tmap, feeds, "tomo")
    points = {int(e): k for k, e in enumerate(tree["event"]) if 1 <= e <= 11}
    assert sorted(points) == list(range(1, 12))
    assert all(tree["streams"][k] == "orca,pcap_rot,sardana" for k in points.values())
    np.testing.assert_allclose([tree["value_orca"][points[e]] for e in range(1, 12)], sums)
    np.testing.assert_array_equal(
        [tree["value_sardana"][points[e]] for e in range(1, 12)], np.arange(11)
    )
    np.testing.assert_array_equal(
        [tree["value_pcap_rot"][points[e]] for e in range(1, 12)], [64806368.0] * 11
    )
    assert {s: status["ledger"][s]["delivered"] for s in feeds} == dict.fromkeys(feeds, 13)


def test_worker_errors_are_counted_and_the_scan_completes(deployment: Deployment) -> None:
    msgs, sums = synthetic_stins(12, seed=4)
    status, tree = deployment.scan(
        {"cam": [generic(i % 2) for i in range(12)]},
        {"cam": msgs},
        "failing",
        parameters={"fail_every": "3"},
    )
    got = {int(f): v for f, v in zip(tree["frame"], tree["value_cam"], strict=True) if f >= 0}
    assert sorted(got) == [1, 2, 4, 5, 7, 8, 10, 11]
    np.testing.assert_allclose([got[f] for f in sorted(got)], [sums[f] for f in sorted(got)])
    assert status["worker_errors"] >= 4
    assert "refusing frame" in status["last_error"]
    # Parameters stay set for later scans (as in dranspose) until changed.
    assert deployment.client.request("parameters", values={"fail_every": 0})["ok"]


def test_stop_mid_scan_then_the_next_scan_gets_only_its_own_frames(deployment: Deployment) -> None:
    msgs, _ = synthetic_stins(40, seed=5)
    client = deployment.client
    client.arm({"cam": [generic(i % 2) for i in range(40)]}, scan_id="stopped")
    for m in msgs[:11]:
        deployment.sources["cam"].send_multipart(m)
    client.wait_until(11, 30)
    assert client.request("stop")["ok"]
    status = client.wait(30)["scan"]
    assert status["state"] == "stopped"
    assert 11 <= status["completed_events"] < 42
    # The detector still holds the rest of that scan (a PUSH socket blocks while nobody is
    # connected); it arrives when the next scan connects, before that scan's own frames.
    fresh, sums = synthetic_stins(6, seed=6)
    status, tree = deployment.scan(
        {"cam": [generic(i % 2) for i in range(6)]}, {"cam": msgs[11:] + fresh}, "after-stop"
    )
    values = sorted(v for v, f in zip(tree["value_cam"], tree["frame"], strict=True) if f >= 0)
    np.testing.assert_allclose(values, sorted(sums))
    assert status["ledger"]["cam"]["dropped"] == {"before the start message": 31}  # 30 images + end


def test_recorded_scan_replays_to_the_same_result(deployment: Deployment, tmp_path: Path) -> None:
    from tango_dranspose.runtime.replay import ReplayConfig, run_replay

    msgs, _ = synthetic_stins(10, seed=7)
    cells = [generic(i // 2) for i in range(10)]
    _, live = deployment.scan({"cam": cells}, {"cam": msgs}, "recorded", record_dir=str(tmp_path))
    dump = tmp_path / "dump_ing-a_recorded.cbors"
    assert dump.exists()
    from tango_dranspose.core.triggermap import TriggerMap

    replayed = run_replay(
        ReplayConfig(
            worker="tests.runtime.payloads:ProbeWorker",
            reducer="tests.runtime.payloads:ColumnsReducer",
            captures=[str(dump)],
            trigger_map=TriggerMap.from_json({"cam": cells}),
            workers=2,
            search=[REPO],
        )
    ).publish

    def data(tree: dict[str, Any]) -> list[tuple[int, float]]:
        return sorted(
            (int(f), float(v))
            for f, v in zip(tree["frame"], tree["value_cam"], strict=True)
            if f >= 0
        )

    assert data(replayed) == data(live)
    assert len(data(live)) == 10
