"""Replay end to end: examples on real and synthetic captures, maps, failures, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from tango_dranspose.cli import main
from tango_dranspose.core.capture import DumpWriter, read_dump
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.examples.demo_data import write_demo_scan
from tango_dranspose.runtime.replay import (
    ReplayConfig,
    default_trigger_map,
    open_inputs,
    run_replay,
)
from tango_dranspose.streams.stream1 import Stream1Data, parse

ROI_W = "tango_dranspose.examples.roi:RoiWorker"
ROI_R = "tango_dranspose.examples.roi:RoiReducer"
TOMO_W = "tango_dranspose.examples.tomo:TomoWorker"
TOMO_R = "tango_dranspose.examples.tomo:TomoReducer"


def images_of(path: Path) -> list[np.ndarray]:
    out = []
    for rec in read_dump(path):
        for sd in rec.streams.values():
            packet = parse(sd)
            if isinstance(packet, Stream1Data):
                assert packet.data is not None, "an image without pixels"
                out.append(packet.data)
    return out


def roi_expectation(images: list[np.ndarray], rows: slice, cols: slice) -> np.ndarray:
    return np.array([img.astype(np.float64)[rows, cols].sum() for img in images])


@pytest.fixture
def demo_scan(tmp_path: Path) -> Path:
    return write_demo_scan(tmp_path / "scan.cbors", frames=12)


@pytest.mark.parametrize("workers", [1, 3])
def test_roi_example_on_synthetic_scan(demo_scan: Path, tmp_path: Path, workers: int) -> None:
    out = tmp_path / "roi.h5"
    s = run_replay(
        ReplayConfig(
            worker=ROI_W,
            reducer=ROI_R,
            captures=[str(demo_scan)],
            parameters={"roi": b"[20, 44, 20, 44]"},
            workers=workers,
            output=out,
        )
    )
    assert s.ok and s.events == 14 and s.results == 12
    images = images_of(demo_scan)
    with h5py.File(out) as f:
        tree = read_tree(f)
        assert f["roi"].attrs["roi"] == "[20, 44, 20, 44]"
        assert f["roi/intensity"].attrs["units"] == "counts"
    np.testing.assert_allclose(
        tree["roi"]["intensity"], roi_expectation(images, slice(20, 44), slice(20, 44))
    )
    np.testing.assert_array_equal(tree["roi"]["frame"], np.arange(12))
    np.testing.assert_allclose(tree["sum_image"], np.sum([i.astype(float) for i in images], axis=0))
    assert tree["frames"] == 12


@pytest.mark.captures
def test_roi_example_on_the_xrd_capture(captures: Path, tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps([{"name": "roi", "data": "[2, 8, 3, 7]"}]))
    out = tmp_path / "xrd.h5"
    code = main(
        [
            "replay",
            "-w",
            ROI_W,
            "-r",
            ROI_R,
            "-f",
            str(captures / "dump_xrd.cbors"),
            "-p",
            str(params),
            "--workers",
            "2",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    images = images_of(captures / "dump_xrd.cbors")
    assert len(images) == 9 and images[0].dtype == np.uint16 and images[0].shape == (10, 10)
    with h5py.File(out) as f:
        got = f["roi/intensity"][()]
    np.testing.assert_allclose(got, roi_expectation(images, slice(2, 8), slice(3, 7)))


@pytest.mark.captures
def test_tomo_example_on_three_merged_dumps(captures: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in (captures / "danmax-tomo").glob("*.cbors"))
    out = tmp_path / "tomo.h5"
    s = run_replay(
        ReplayConfig(worker=TOMO_W, reducer=TOMO_R, captures=files, workers=2, output=out)
    )
    assert s.ok, s.failures
    assert s.events == 13
    assert {k: v.delivered for k, v in s.streams.items()} == {
        "orca": 13,
        "pcap_rot": 13,
        "sardana": 13,
    }
    orca = next(p for p in files if "dumporca" in p)
    sums = [float(img.astype(np.float64).sum()) for img in images_of(Path(orca))]
    with h5py.File(out) as f:
        tomo = read_tree(f["tomo"])
    np.testing.assert_array_equal(tomo["point_nb"], np.arange(11))
    np.testing.assert_allclose(tomo["camera_sum"], sums)
    np.testing.assert_allclose(tomo["angle"], np.full(11, 35005.0))


def test_map_semantics_in_replay(demo_scan: Path, tmp_path: Path) -> None:
    # Pairs of frames per worker, every 4th frame discarded: the reducer sees the rest only.
    cells = [[] if i % 4 == 3 else [{"constraint": i // 2}] for i in range(12)]
    tmap = tmp_path / "map.json"
    tmap.write_text(json.dumps({"xrd": cells}))
    from tango_dranspose.core.triggermap import TriggerMap

    s = run_replay(
        ReplayConfig(
            worker=ROI_W,
            reducer=ROI_R,
            captures=[str(demo_scan)],
            workers=3,
            trigger_map=TriggerMap.from_json(tmap.read_text()),
        )
    )
    assert s.ok
    assert s.streams["xrd"].discarded == 3 and s.streams["xrd"].delivered == 11
    assert list(s.publish["roi"]["frame"]) == [i for i in range(12) if i % 4 != 3]


def test_map_asking_for_more_frames_than_captured(demo_scan: Path) -> None:
    from tango_dranspose.core.triggermap import TriggerMap

    tmap = TriggerMap.from_json({"xrd": [[{"constraint": 0}]] * 20})
    s = run_replay(
        ReplayConfig(worker=ROI_W, reducer=ROI_R, captures=[str(demo_scan)], trigger_map=tmap)
    )
    # 12 images + end message are consumed by 13 of the 20 data events; the rest are missing.
    assert s.streams["xrd"].missing == 8


FAILING = """
import numpy as np

class Worker:
    def __init__(self, *args, **kwargs):
        pass
    def process_event(self, event, parameters=None, tick=False):
        if event.event_number % 3 == 0:
            raise ValueError(f"bad event {event.event_number}")
        return event.event_number

class Reducer:
    def __init__(self, *args, **kwargs):
        self.publish = {"seen": []}
    def process_result(self, result, parameters=None):
        self.publish["seen"].append(result.payload)
"""


def test_payload_exceptions_are_counted_and_the_replay_goes_on(
    demo_scan: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pkg = tmp_path / "failing_payload"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(FAILING))
    code = main(
        [
            "replay",
            "-w",
            "failing_payload:Worker",
            "-r",
            "failing_payload:Reducer",
            "-f",
            str(demo_scan),
            "--payload-path",
            str(tmp_path),
            "--print-result",
        ]
    )
    out = capsys.readouterr()
    assert code == 1
    assert "errors      5" in out.out  # events 0, 3, 6, 9, 12 of 14
    assert "ValueError: bad event 3" in out.out
    assert "Traceback" in caplog.text and "bad event 6" in caplog.text
    assert "seen: list of 9: [1, 2, 4, 5] ..." in out.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "MAP"], "invalid trigger map"),
        (["-p", "PARAMS"], "not valid JSON"),
        (["-f", "/nonexistent/file.cbors"], "no such capture file"),
        (["-w", "nosuch.module:W"], "cannot import 'nosuch.module'"),
    ],
)
def test_bad_input_gives_one_clear_line(
    demo_scan: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    bad_map = tmp_path / "map.json"
    bad_map.write_text(json.dumps({"xrd": [[{"constraint": 0}], []], "other": [None]}))
    bad_params = tmp_path / "p.json"
    bad_params.write_text("{oops")
    args = [a.replace("MAP", str(bad_map)).replace("PARAMS", str(bad_params)) for a in args]
    base = {"-w": ROI_W, "-r": ROI_R, "-f": str(demo_scan)}
    for flag in ("-w", "-r", "-f"):
        if flag not in args:
            args = [flag, base[flag], *args]
    code = main(["replay", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_map_with_unknown_stream_is_refused(
    demo_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmap = tmp_path / "map.json"
    tmap.write_text(json.dumps({"eiger": [[{"constraint": 0}]]}))
    code = main(["replay", "-w", ROI_W, "-r", ROI_R, "-f", str(demo_scan), "--map", str(tmap)])
    assert code == 2
    assert "stream(s) eiger that no input provides" in capsys.readouterr().err


def test_console_script_local_demo_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tango_dranspose.cli", "demo", "--local", "--frames", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "events      10" in proc.stdout
    assert "roi/intensity" in proc.stdout


def test_truncated_capture_replays_complete_records_and_says_where(
    demo_scan: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = demo_scan.read_bytes()
    demo_scan.write_bytes(blob[: len(blob) - 100])
    code = main(["replay", "-w", ROI_W, "-r", ROI_R, "-f", str(demo_scan), "--workers", "3"])
    out = capsys.readouterr().out
    assert code == 0
    # The end message and the last image are cut: 12 complete events of 14.
    assert "events      12" in out
    assert "results     11" in out
    assert "warning" in out and "truncated after 12 complete records" in out


# -- results do not depend on the number of workers -------------------------------------------

DIGEST_PAYLOADS = """
import zlib

import numpy as np


def digest(event):
    # Event number, streams, frames, bytes and a checksum of everything received: any frame
    # lost, duplicated or misrouted changes the row.
    crc, frames, size = 0, 0, 0
    for name in sorted(event.streams):
        crc = zlib.crc32(name.encode(), crc)
        for frame in event.streams[name].frames:
            raw = bytes(frame.buffer if hasattr(frame, "buffer") else frame)
            crc = zlib.crc32(raw, crc)
            frames += 1
            size += len(raw)
    return [event.event_number, len(event.streams), frames, size, crc]


class RowWorker:
    # A new row per event, the last (end) event included.
    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event, parameters=None, tick=False):
        if event.event_number == 0:
            return None  # the broadcast start event: every worker sees it
        return digest(event)


class StateWorker:
    # Returns its running state: one buffer, overwritten by every event.
    def __init__(self, *args, **kwargs):
        self.state = np.zeros(5, dtype=np.int64)

    def process_event(self, event, parameters=None, tick=False):
        if event.event_number == 0:
            return None
        self.state[:] = digest(event)
        return {"state": self.state}


class PileWorker:
    # Returns its running state: a list that grows with every event.
    def __init__(self, *args, **kwargs):
        self.pile = []

    def process_event(self, event, parameters=None, tick=False):
        self.pile.append(event.event_number)
        return {"pile": self.pile}


class OpaqueWorker:
    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event, parameters=None, tick=False):
        return {"handle": object()}


class RowReducer:
    def __init__(self, *args, **kwargs):
        self.rows = []
        self.publish = {}

    def process_result(self, result, parameters=None):
        payload = result.payload
        if isinstance(payload, dict) and "pile" in payload:
            self.rows.append(payload["pile"])
            return
        self.rows.append(np.asarray(payload["state"] if isinstance(payload, dict) else payload))

    def finish(self, parameters=None):
        if self.rows and not isinstance(self.rows[0], list):
            self.publish["rows"] = np.stack(self.rows)
        else:
            self.publish["piles"] = [list(p) for p in self.rows]
"""


@pytest.fixture(scope="module")
def digest_payloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One directory for the module: a process loads a payload package of one name once.
    root = tmp_path_factory.mktemp("digest")
    pkg = root / "digest_payloads"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(DIGEST_PAYLOADS)
    return root


def _capture_sets(root: Path) -> list[list[str]]:
    files = sorted(p for p in root.iterdir() if p.is_file() and ".cbor" in p.name)
    return [[str(p)] for p in files] + [sorted(str(p) for p in (root / "danmax-tomo").iterdir())]


def assert_same_tree(a: object, b: object, where: str = "") -> None:
    """Two HDF5 trees (``read_tree`` dicts) hold the same groups, shapes, dtypes and values."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}/{key}")
        return
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    assert (a_arr.shape, a_arr.dtype) == (b_arr.shape, b_arr.dtype), where
    np.testing.assert_array_equal(a_arr, b_arr, err_msg=where)


@pytest.mark.captures
@pytest.mark.parametrize("worker", ["RowWorker", "StateWorker"])
def test_results_do_not_depend_on_the_number_of_workers(
    captures: Path, digest_payloads: Path, tmp_path: Path, worker: str
) -> None:
    for files in _capture_sets(captures):
        trees = []
        for workers in (1, 2, 3):
            out = tmp_path / f"{worker}-{workers}.h5"
            s = run_replay(
                ReplayConfig(
                    worker=f"digest_payloads:{worker}",
                    reducer="digest_payloads:RowReducer",
                    captures=files,
                    workers=workers,
                    output=out,
                    search=[digest_payloads],
                )
            )
            assert s.ok, s.failures
            with h5py.File(out) as f:
                trees.append(read_tree(f))
            rows = trees[-1]["rows"]
            # One row per event after the first, each its own (not the worker's last state).
            assert len(rows) == s.events - 1, files
            np.testing.assert_array_equal(rows[:, 0], np.arange(1, s.events))
        for workers, tree in zip((2, 3), trees[1:], strict=True):
            assert_same_tree(trees[0], tree, f"{files[0]} with {workers} workers")


def test_a_returned_running_state_is_reduced_as_it_was_when_returned(
    demo_scan: Path, digest_payloads: Path
) -> None:
    s = run_replay(
        ReplayConfig(
            worker="digest_payloads:PileWorker",
            reducer="digest_payloads:RowReducer",
            captures=[str(demo_scan)],
            search=[digest_payloads],
        )
    )
    assert s.ok, s.failures
    assert s.publish["piles"] == [list(range(n + 1)) for n in range(14)]


def test_a_result_that_cannot_travel_fails_as_it_would_live(
    demo_scan: Path, digest_payloads: Path
) -> None:
    s = run_replay(
        ReplayConfig(
            worker="digest_payloads:OpaqueWorker",
            reducer="digest_payloads:RowReducer",
            captures=[str(demo_scan)],
            search=[digest_payloads],
        )
    )
    assert s.failure_count == 14 and s.results == 0
    assert "cannot send object at result['handle']" in s.failures[0].error


def test_the_default_map_is_what_the_replay_does_without_one(
    tmp_path: Path, digest_payloads: Path
) -> None:
    # Event 2 is in no input, stream b only in some events; read twice over (--loop 2).
    path = tmp_path / "gaps.cbors"
    with DumpWriter(path) as w:
        for number, streams in [(0, "ab"), (1, "a"), (3, "ab")]:
            w.write(number, {s: StreamData("STINS", [f"{s}{number}".encode()]) for s in streams})
    cfg = ReplayConfig(
        worker="digest_payloads:RowWorker",
        reducer="digest_payloads:RowReducer",
        captures=[str(path)],
        workers=2,
        search=[digest_payloads],
        loop=2,
    )
    tmap = default_trigger_map(open_inputs(cfg), cfg.loop)
    assert len(tmap) == 8 and not tmap.wrap

    def cells(n: int) -> dict[str, list[int | None] | None]:
        return {
            s: None if cell is None else [vw.constraint for vw in cell]
            for s, cell in tmap.event(n).items()
        }

    assert cells(0) == {"a": [None], "b": [None]}  # the first event to every worker
    assert cells(1) == {"a": [0], "b": None}
    assert cells(2) == {"a": None, "b": None}  # a number the inputs skip: no frames
    assert cells(3) == cells(4) == cells(7) == {"a": [0], "b": [0]}
    assert cells(5) == {"a": [0], "b": None} and cells(6) == cells(2)
    without = run_replay(cfg)
    cfg.trigger_map = tmap
    with_map = run_replay(cfg)
    assert without.ok and with_map.ok
    assert with_map.events == 8 and without.events == 6  # the map's two gaps count as events
    np.testing.assert_array_equal(with_map.publish["rows"], without.publish["rows"])
    assert [int(r[0]) for r in without.publish["rows"]] == [1, 3, 4, 5, 7]
