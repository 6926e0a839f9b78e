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
from tango_dranspose.core.capture import read_dump
from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.examples.demo_data import write_demo_scan
from tango_dranspose.runtime.replay import ReplayConfig, run_replay
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
    assert "stream(s) eiger that no capture provides" in capsys.readouterr().err


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
