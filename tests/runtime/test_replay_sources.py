"""Replay from HDF5 files and coded sources (``--source``), and ``--loop``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import bitshuffle.h5 as bshuf_h5
import h5py
import numpy as np
import pytest

from tango_dranspose.cli import main
from tango_dranspose.core.capture import CaptureError
from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.core.triggermap import TriggerMap
from tango_dranspose.runtime.replay import ReplayConfig, ReplaySummary, run_replay
from tango_dranspose.sources.hdf5 import Hdf5Source, Hdf5Spec, is_hdf5_spec

FRAMES_PER_FILE = (4, 3)
SHAPE = (24, 20)

PAYLOADS = """
import numpy as np

from tango_dranspose.compat.event import InternalWorkerMessage, StreamData
from tango_dranspose.compat.middlewares.dectris_stream2 import parse as parse_stream2
from tango_dranspose.compat.middlewares.pcap import parse as parse_pcap
from tango_dranspose.compat.middlewares.sardana import parse as parse_sardana
from tango_dranspose.compat.middlewares.stream1 import parse as parse_stins
from tango_dranspose.streams import stream1


class ScanWorker:
    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event, parameters=None, tick=False):
        row = {"event": event.event_number}
        for name, data in event.streams.items():
            if data.typ == "STINS":
                msg = parse_stins(data)
                if msg.htype == "image":
                    row[name] = {"image": msg.data, "compression": msg.compression,
                                 "wire_bytes": len(bytes(data.frames[1]))}
            elif data.typ == "DECTRIS_STREAM2":
                msg = parse_stream2(data)
                if msg.type == "image":
                    row[name] = {"image": msg.data["threshold_1"]}
            elif data.typ == "PCAP":
                msg = parse_pcap(data)
                if msg.message_type == "data":
                    row[name] = {"x": msg.x, "frame_number": msg.frame_number}
            elif data.typ == "sardana":
                msg = parse_sardana(data)
                if msg.type == "RecordData":
                    row[name] = {"x": msg.x, "point_nb": msg.point_nb}
        return row if len(row) > 1 else None


class ScanReducer:
    def __init__(self, *args, **kwargs):
        self.publish = {"rows": []}

    def process_result(self, result, parameters=None):
        self.publish["rows"].append(result.payload)

    def finish(self, parameters=None):
        # What the result file can hold (rows of dicts it cannot).
        xs = [r["x"]["x"] for r in self.publish["rows"] if "x" in r]
        self.publish["x"] = np.array(xs)


class CameraAndMotor:
    # dranspose's source contract: get_source_generators() returns generators of
    # InternalWorkerMessage; the two streams are merged by event number.
    def get_source_generators(self):
        return [self.camera(), self.motor()]

    def camera(self):
        yield InternalWorkerMessage(0, {"cam": StreamData("STINS", stream1.build_header())})
        for i in range(3):
            image = np.full((4, 5), i, dtype=np.uint16)
            frames = stream1.build_image(image, frame=i, msg_number=i + 1)
            yield InternalWorkerMessage(i + 1, {"cam": StreamData("STINS", frames)})
        yield InternalWorkerMessage(4, {"cam": StreamData("STINS", stream1.build_end(4))})

    def motor(self):
        for i in (1, 2, 3):
            yield InternalWorkerMessage(i, {"pos": StreamData("raw", [str(i * 0.5).encode()])})


class Broken:
    def get_source_generators(self):
        return [self.frames()]

    def frames(self):
        yield InternalWorkerMessage(0, {"cam": StreamData("STINS", stream1.build_header())})
        raise RuntimeError("the detector file ran out")


class Disordered:
    def get_source_generators(self):
        return [self.frames()]

    def frames(self):
        for number in (0, 1, 1, 2):  # the second 1 cannot be merged in order: dropped
            yield InternalWorkerMessage(number, {"cam": StreamData("raw", [b"x"])})


class FrameCounter:
    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event, parameters=None, tick=False):
        return {name: len(d.frames) for name, d in event.streams.items()} | {
            "event": event.event_number
        }
"""


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One directory for the module: a process loads a payload package of one name once.
    root = tmp_path_factory.mktemp("h5payloads")
    pkg = root / "h5payloads"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(PAYLOADS))
    return root


def frames_of(count: int, start: int = 0) -> np.ndarray:
    rng = np.random.default_rng(start)
    return rng.poisson(50, (count, *SHAPE)).astype(np.uint16)


@pytest.fixture
def eiger_scan(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """An Eiger/NeXus layout: master file with external links to two bslz4 data files, an
    uncompressed copy of the frames and a motor position per frame."""
    scan = tmp_path / "scan"
    scan.mkdir()
    images = []
    for n, count in enumerate(FRAMES_PER_FILE, start=1):
        data = frames_of(count, start=n)
        images.append(data)
        with h5py.File(scan / f"scan_data_{n:06d}.h5", "w") as f:
            f.create_dataset(
                "/entry/data/data",
                data=data,
                chunks=(1, *SHAPE),
                compression=bshuf_h5.H5FILTER,
                compression_opts=(0, bshuf_h5.H5_COMPRESS_LZ4),
            )
    frames = np.concatenate(images)
    x = np.linspace(-1.0, 1.0, len(frames))
    with h5py.File(scan / "scan_master.h5", "w") as f:
        for n in range(1, len(FRAMES_PER_FILE) + 1):
            f[f"/entry/data/data_{n:06d}"] = h5py.ExternalLink(
                f"scan_data_{n:06d}.h5", "/entry/data/data"
            )
        f["/entry/instrument/detector/raw"] = frames
        f["/entry/sample/x"] = x
        f["/entry/sample/frame_number"] = np.arange(len(frames))
    return scan / "scan_master.h5", frames, x


def replay(payloads: Path, *files: str, **kwargs: Any) -> ReplaySummary:
    summary = run_replay(
        ReplayConfig(
            worker="h5payloads:ScanWorker",
            reducer="h5payloads:ScanReducer",
            captures=list(files),
            search=[payloads],
            **kwargs,
        )
    )
    assert summary.ok, summary.failures
    return summary


def test_eiger_scan_replays_compressed_frames_and_positions(
    eiger_scan: tuple[Path, np.ndarray, np.ndarray], payloads: Path
) -> None:
    master, frames, x = eiger_scan
    s = replay(
        payloads,
        f"cam:hdf5={master}?dataset=/entry/data/data",
        f"raw:hdf5={master}?dataset=/entry/instrument/detector/raw",
        f"x:hdf5={master}?dataset=/entry/sample/x",
        workers=2,
    )
    n = len(frames)
    assert s.events == n + 2  # start, one per frame, end
    assert {k: v.delivered for k, v in s.streams.items()} == {
        "cam": n + 2,
        "raw": n + 2,
        "x": n + 2,
    }
    rows = s.publish["rows"]
    assert [r["event"] for r in rows] == list(range(1, n + 1))
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row["cam"]["image"], frames[i])
        np.testing.assert_array_equal(row["raw"]["image"], frames[i])
        # The bslz4 chunk travelled as stored, the plain dataset as pixels.
        assert row["cam"]["compression"] == "bslz4"
        assert row["cam"]["wire_bytes"] < frames[i].nbytes
        assert row["raw"]["compression"] == "none"
        assert row["raw"]["wire_bytes"] == frames[i].nbytes
        assert row["x"] == {"x": x[i], "frame_number": i}


def test_eiger_group_and_stream2_and_sardana(
    eiger_scan: tuple[Path, np.ndarray, np.ndarray], payloads: Path
) -> None:
    master, frames, x = eiger_scan
    s = replay(
        payloads,
        # The group /entry/data means its data_NNNNNN members, in order.
        f"cam:hdf5={master}?dataset=/entry/data&protocol=dectris_stream2",
        f"x:hdf5={master}?dataset=/entry/sample/x&protocol=sardana",
    )
    rows = s.publish["rows"]
    assert len(rows) == len(frames)
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row["cam"]["image"], frames[i])
        assert row["x"] == {"x": x[i], "point_nb": i}


def test_frames_not_stored_one_per_chunk_are_sent_decompressed(
    tmp_path: Path, payloads: Path
) -> None:
    frames = frames_of(5)
    path = tmp_path / "pairs.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "/entry/data/data",
            data=frames,
            chunks=(2, *SHAPE),
            compression=bshuf_h5.H5FILTER,
            compression_opts=(0, bshuf_h5.H5_COMPRESS_LZ4),
        )
    s = replay(payloads, f"cam={path}")  # .h5: HDF5 without ':hdf5'; default dataset
    rows = s.publish["rows"]
    assert [r["cam"]["compression"] for r in rows] == ["none"] * 5
    np.testing.assert_array_equal(np.stack([r["cam"]["image"] for r in rows]), frames)


def test_loop_repeats_the_input_with_increasing_event_numbers(
    eiger_scan: tuple[Path, np.ndarray, np.ndarray], payloads: Path
) -> None:
    master, frames, x = eiger_scan
    n = len(frames)
    s = replay(
        payloads,
        f"cam:hdf5={master}",
        f"x:hdf5={master}?dataset=/entry/sample/x",
        workers=3,
        loop=3,
    )
    assert s.events == 3 * (n + 2)
    rows = s.publish["rows"]
    events = [r["event"] for r in rows]
    assert events == [e + k * (n + 2) for k in range(3) for e in range(1, n + 1)]
    np.testing.assert_array_equal(
        np.stack([r["cam"]["image"] for r in rows]), np.concatenate([frames] * 3)
    )
    assert [r["x"]["x"] for r in rows] == list(x) * 3


def test_loop_with_a_map_reads_every_stream_again(
    eiger_scan: tuple[Path, np.ndarray, np.ndarray], payloads: Path
) -> None:
    master, frames, _ = eiger_scan
    cells = [[{"constraint": i % 2}] for i in range(2 * (len(frames) + 2) - 2)]
    s = replay(
        payloads,
        f"cam:hdf5={master}",
        workers=2,
        loop=2,
        trigger_map=TriggerMap.from_json({"cam": cells}),
    )
    led = s.streams["cam"]
    # Two passes of start + frames + end; the map's wrap adds a start and an end event.
    assert (led.delivered, led.missing, led.unused) == (2 * (len(frames) + 2), 0, 0)
    assert len(s.publish["rows"]) == 2 * len(frames)


def test_coded_source_follows_the_dranspose_contract(payloads: Path) -> None:
    s = run_replay(
        ReplayConfig(
            worker="h5payloads:FrameCounter",
            reducer="h5payloads:ScanReducer",
            captures=[],
            source="h5payloads:CameraAndMotor",
            search=[payloads],
            workers=2,
            loop=2,
        )
    )
    assert s.ok, s.failures
    assert s.events == 10
    rows = s.publish["rows"]
    # The first event goes to both workers, the others to one; positions join events 1..3.
    assert [r["event"] for r in rows] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [r.get("pos") for r in rows] == [None, None, 1, 1, 1, None, None, 1, 1, 1, None]
    assert s.streams["cam"].delivered == 10 and s.streams["pos"].delivered == 6


def test_coded_source_out_of_order_events_are_dropped_once_per_pass(payloads: Path) -> None:
    s = run_replay(
        ReplayConfig(
            worker="h5payloads:FrameCounter",
            reducer="h5payloads:ScanReducer",
            captures=[],
            source="h5payloads:Disordered",
            search=[payloads],
            loop=2,
        )
    )
    assert s.ok and s.events == 6
    assert s.streams["cam"].dropped == 2
    assert s.drop_reasons == {
        "cam: event 1 after event 1 (not increasing)": 2,
    }


def test_coded_source_failure_is_counted_and_the_replay_ends(
    payloads: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "replay",
            "-w",
            "h5payloads:FrameCounter",
            "-r",
            "h5payloads:ScanReducer",
            "--source",
            "h5payloads:Broken",
            "--payload-path",
            str(payloads),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "events      1" in out
    assert "RuntimeError: the detector file ran out" in out


def test_cli_replays_hdf5_with_loop(
    eiger_scan: tuple[Path, np.ndarray, np.ndarray], payloads: Path, tmp_path: Path
) -> None:
    master, _, x = eiger_scan
    out = tmp_path / "result.h5"
    code = main(
        [
            "replay",
            "-w",
            "h5payloads:ScanWorker",
            "-r",
            "h5payloads:ScanReducer",
            "-f",
            f"x:hdf5={master}?dataset=/entry/sample/x",
            "--payload-path",
            str(payloads),
            "--loop",
            "2",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    with h5py.File(out) as f:
        tree = read_tree(f)
    np.testing.assert_array_equal(tree["x"], np.concatenate([x, x]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cam:hdf5=MASTER?dataset=/entry/nothing", "/entry/nothing is neither a dataset"),
        ("cam:hdf5=MASTER?datset=/entry/data", "unknown option(s) 'datset'"),
        ("cam:hdf5=MASTER?protocol=pcap", "can be sent as STINS or DECTRIS_STREAM2, not PCAP"),
        ("cam:hdf5=MASTER?dataset=/entry/sample/x&dataset=/entry/data", "not a mix"),
        ("cam:hdf5=/nonexistent/file.h5", "no such HDF5 file"),
        ("cam:hdf5=BROKEN", "links to scan_data_000002.h5, which cannot be opened"),
        (
            "cam:hdf5=BROKEN?dataset=/entry/data/data_000002",
            "cannot read /entry/data/data_000002 (links to scan_data_000002.h5",
        ),
        ("cam:hdf5=MASTER?dataset", "cannot read the options 'dataset'"),
        ("n:hdf5=MASTER?dataset=/entry/sample/frame_number", "has a field frame_number of its"),
    ],
)
def test_bad_hdf5_input_gives_one_clear_line(
    eiger_scan: tuple[Path, np.ndarray, np.ndarray],
    payloads: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    message: str,
) -> None:
    master, _, _ = eiger_scan
    if "BROKEN" in spec:
        (master.parent / "scan_data_000002.h5").unlink()
    spec = spec.replace("MASTER", str(master)).replace("BROKEN", str(master))
    code = main(
        ["replay", "-w", "h5payloads:ScanWorker", "-r", "h5payloads:ScanReducer", "-f", spec]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_which_arguments_are_hdf5() -> None:
    assert is_hdf5_spec("cam:hdf5=scan.cbors")
    assert is_hdf5_spec("scan_master.h5?dataset=/entry/data")
    assert is_hdf5_spec("cam=run.nxs")
    assert not is_hdf5_spec("xsp3:xspress=dump.cbors")
    assert not is_hdf5_spec("dump.cbors")
    spec = Hdf5Spec.parse("run_master.h5")
    assert (spec.stream, spec.datasets, spec.protocol) == (
        "run_master",
        ("/entry/data/data",),
        None,
    )


def test_scalar_datasets_of_unequal_length_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3.0)
        f["y"] = np.arange(4.0)
    with pytest.raises(CaptureError, match="differ in length"):
        Hdf5Source(Hdf5Spec.parse(f"pos:hdf5={path}?dataset=/x&dataset=/y"))
