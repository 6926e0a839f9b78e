"""Sardana arms the pipeline: a real Pool and MacroServer (dummy controllers, configured from
the project's sardana-config YAML), the pipeline's device servers and a simulated camera, all
driven from a plain PyTango Door client as spock would."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

pytest.importorskip("sardana")
pytest.importorskip("sardana_config")

import tango

from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.deploy.database import TangoDb, free_port, start_pytango_db
from tango_dranspose.deploy.processes import wait_until
from tests.runtime.procs import Proc
from tests.sardana.system import DoorClient, MacroRun, Sardana
from tests.system.conftest import REPO, Suite

P = "sar/dranspose"
CONTROLLER = f"{P}/controller"
CAM, SARDANA = f"{P}/cam", f"{P}/sardana"
REDUCER = f"{P}/reducer"
DOWN = f"{P}/down"  # registered, never started: a pipeline that is down
FINAL = ("finished", "stopped", "aborted", "failed")
# What every test starts from (the rest of the environment is the YAML's).
ENVIRONMENT = {
    "DransposeController": CONTROLLER,
    "DransposeOnError": "abort",
    "DransposeSardanaStream": "sardana",
    "DransposeFinishTimeout": 20,
    "ActiveMntGrp": "mg_dranspose",
}


def deployment(results: Path, http_port: int) -> dict[str, Any]:
    def dev(**props: Any) -> dict[str, Any]:
        return {
            "properties": {
                "Pipeline": ["sardanatest"],
                "EventPeriod": ["0.2"],
                **{k: v if isinstance(v, list) else [str(v)] for k, v in props.items()},
            }
        }

    payload = {"PayloadPath": [str(REPO)]}
    return {
        "servers": {
            "DransposeController": {"sar": {"DransposeController": {CONTROLLER: dev()}}},
            "DransposeIngester": {
                "sar": {
                    "DransposeIngester": {
                        # The camera's upstream is set per test (the simulator binds a free port).
                        CAM: dev(
                            Streams="cam", Protocol="STINS", UpstreamUrl="pull+tcp://127.0.0.1:1"
                        ),
                        SARDANA: dev(
                            Streams="sardana",
                            Protocol="sardana",
                            UpstreamUrl=f"http://127.0.0.1:{http_port}",
                        ),
                    }
                }
            },
            "DransposeWorker": {
                f"sar-{i}": {
                    "DransposeWorker": {
                        f"{P}/worker-{i}": dev(
                            WorkerClass="tests.sardana.payloads:PointWorker", **payload
                        )
                    }
                }
                for i in (1, 2)
            },
            "DransposeReducer": {
                "sar": {
                    "DransposeReducer": {
                        REDUCER: dev(
                            ReducerClass="tests.sardana.payloads:PointReducer",
                            ResultDir=str(results),
                            # Sardana's scan directory too: result files go beside the raw data.
                            AllowedResultDirs=[str(results), str(results.parent / "scans")],
                            **payload,
                        )
                    }
                }
            },
        }
    }


@dataclass
class Stack:
    db: TangoDb
    sardana: Sardana
    suite: Suite
    door: DoorClient

    def controller(self) -> tango.DeviceProxy:
        return self.suite.proxy(CONTROLLER)

    def senv(self, name: str, value: Any) -> None:
        text = value if isinstance(value, str) else repr(value)
        self.door.must("senv", name, text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("sardana")
    db = start_pytango_db(state / "db")
    sardana = Sardana(db.tango_host, state)
    suite: Suite | None = None
    door: DoorClient | None = None
    try:
        sardana.load(ENVIRONMENT, reduced=f"{REDUCER}/points")
        pool = sardana.start_pool()
        for sub in ("suite", "down"):
            (state / sub).mkdir()
        suite = Suite(db, deployment(state / "results", free_port()), state / "suite")
        assert suite.registration.applied
        # Registered and never started: the pipeline "down" of the failure-policy test.
        down: dict[str, Any] = {
            "servers": {"DransposeController": {"down": {"DransposeController": {DOWN: {}}}}}
        }
        Suite(db, down, state / "down")
        suite.start()
        sardana.wait_pool(pool)
        sardana.start_macroserver()
        door = DoorClient(sardana)
        ctrl = suite.proxy(CONTROLLER)
        wait_until(lambda: str(ctrl.state()) == "ON", 60, f"controller not ON: {ctrl.status()}")
        yield Stack(db, sardana, suite, door)
    finally:
        if door is not None:
            door.close()
        sardana.stop()
        if suite is not None:
            suite.stop()
        db.stop()


@pytest.fixture
def env(stack: Stack) -> Iterator[Stack]:
    """Each test starts from the same environment, with no general hooks."""
    for name, value in ENVIRONMENT.items():
        stack.senv(name, value)
    stack.door.run("usenv", "_GeneralHooks", "DransposeStreams")
    yield stack


@pytest.fixture
def camera(stack: Stack) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.stop()


def start_camera(stack: Stack, procs: list[Proc], frames: int, interval: float = 0.0) -> None:
    """A simulated camera with ``frames`` frames, and the cam ingester pointed at it."""
    cam = Proc(
        "simulate", "stins", "-n", str(frames), "--shape", "8x8", "-t", "push",
        "--interval", str(interval), name="cam",
    )  # fmt: skip
    procs.append(cam)
    stack.suite.put_properties(CAM, {"UpstreamUrl": [f"pull+{cam.expect('listening')}"]})
    ing = stack.suite.proxy(CAM)
    ing.Init()
    wait_until(lambda: str(ing.state()) == "ON", 30, f"{CAM} not ON: {ing.status()}")
    ctrl = stack.controller()
    wait_until(
        lambda: "cam" in (ctrl.Streams or ()) and ctrl.ScanState in ("idle", *FINAL),
        30,
        f"controller does not see the camera: {ctrl.status()}",
    )


def defgh(stack: Stack) -> None:
    stack.door.must("defgh", "dranspose_pre_scan", "pre-scan")
    stack.door.must("defgh", "dranspose_post_scan", "post-scan")


def scan_id(run: MacroRun) -> int:
    """The Sardana scan number the run announced ("Scan #N started ...")."""
    found = re.search(r"Scan #(\d+) started", run.text)
    assert found, f"no scan started:\n{run.text}"
    return int(found.group(1))


def points_recorded(run: MacroRun) -> int:
    return sum(1 for line in run.output if line.split()[:1] and line.split()[0].isdigit())


def test_an_ascan_with_the_general_hook_arms_n_plus_2_events_and_completes(
    env: Stack, camera: list[Proc]
) -> None:
    start_camera(env, camera, 11)
    defgh(env)
    run = env.door.must("ascan", "mot01", "0", "10", "10", "0.1")
    sid = scan_id(run)
    assert (
        f"dranspose: armed scan {sid} on {CONTROLLER}: 11 points, 13 events, streams cam, sardana"
        in run.text
    )
    assert f"dranspose: pipeline scan {sid} finished: 13/13 events" in run.text
    assert points_recorded(run) == 11
    ctrl = env.controller()
    assert ctrl.ScanId == str(sid)
    assert ctrl.ScanState == "finished"
    assert ctrl.TotalEvents == ctrl.CompletedEvents == 13
    meta = json.loads(ctrl.ScanMetadata)
    assert meta["title"] == "ascan mot01 0.0 10.0 10 0.1"
    assert meta["macro"] == "ascan"
    assert meta["motors"] == [{"name": "mot01", "start": 0.0, "final": 10.0}]
    assert meta["points"] == 11
    assert meta["integ_time"] == pytest.approx(0.1)
    assert meta["measurement_group"] == "mg_dranspose"
    assert meta["scan_dir"] == str(env.sardana.state / "scans")
    assert meta["scan_file"] == ["scans.dat"]
    armed = json.loads(ctrl.ArmedMap)
    assert armed["sequence"] == ["point"] * 11
    # The reducer writes its result file beside the scan's own file.
    assert ctrl.ResultFile == str(env.sardana.state / "scans" / f"scans_{sid}_processed.h5")
    # Every event holds the camera frame and the Sardana record of one point.
    ledger = json.loads(ctrl.LedgerJson)
    assert {s: ledger[s]["delivered"] for s in ledger} == {"cam": 13, "sardana": 13}
    with h5py.File(ctrl.ResultFile, "r") as f:
        tree = read_tree(f)
    assert list(tree["event"]) == list(range(1, 12))
    assert list(tree["frame"]) == list(range(11))
    assert list(tree["point_nb"]) == list(range(11))
    assert np.allclose(tree["mot01"], np.arange(11.0))  # ascan mot01 0 10 10: positions 0..10
    assert tree["points"] == 11


def test_the_wrapper_arms_a_mesh_scan(env: Stack, camera: list[Proc]) -> None:
    start_camera(env, camera, 6)
    run = env.door.must("dranspose_scan", "mesh mot01 0 2 2 mot02 0 1 1 0.05")
    sid = scan_id(run)
    assert f"armed scan {sid} on {CONTROLLER}: 6 points, 8 events, streams cam, sardana" in run.text
    assert f"pipeline scan {sid} finished: 8/8 events" in run.text
    ctrl = env.controller()
    meta = json.loads(ctrl.ScanMetadata)
    assert meta["macro"] == "mesh" and meta["kind"] == "mesh"
    assert meta["shape"] == [2, 3]
    assert [m["name"] for m in meta["motors"]] == ["mot01", "mot02"]
    assert ctrl.CompletedEvents == 8
    red = env.suite.proxy(REDUCER)
    assert list(red.point_nb) == list(range(6))
    assert list(red.frame) == list(range(6))


def test_with_the_pipeline_down_the_failure_policy_is_honoured(env: Stack) -> None:
    defgh(env)
    env.senv("DransposeController", DOWN)
    run = env.door.run("ascan", "mot01", "0", "1", "2", "0.01")
    assert run.state == "ALARM", run.text
    assert points_recorded(run) == 0
    assert f"dranspose: cannot arm the pipeline for this scan: pipeline {DOWN}" in run.text
    assert "the device is not running (registered, not exported): start its server" in run.text
    assert "The scan is aborted (DransposeOnError is abort" in run.text
    env.senv("DransposeOnError", "warn")
    run = env.door.must("ascan", "mot01", "0", "1", "2", "0.01")
    assert points_recorded(run) == 3
    assert f"cannot arm the pipeline for this scan: pipeline {DOWN}: the device is not" in run.text
    assert "The scan goes on without it (DransposeOnError is warn)" in run.text
    # The aborted scan had its number: the next one has the one after.


def test_a_measurement_group_without_pipeline_streams_arms_nothing_and_says_so(
    env: Stack,
) -> None:
    defgh(env)
    env.senv("ActiveMntGrp", "mg_plain")
    last = env.controller().ScanId
    run = env.door.must("ascan", "mot01", "0", "1", "2", "0.01")
    assert "measurement group mg_plain has no pipeline stream (channels: ct01, ct02)" in run.text
    assert points_recorded(run) == 3
    assert env.controller().ScanId == last


@pytest.mark.parametrize("how", ["AbortMacro", "StopMacro"])
def test_a_user_abort_or_stop_aborts_the_pipeline_scan(
    env: Stack, camera: list[Proc], how: str
) -> None:
    # The camera sends 5 frames of 40: the pipeline's scan can only end by the abort.
    start_camera(env, camera, 5)
    defgh(env)
    ctrl = env.controller()
    env.door.start("ascan", "mot01", "0", "40", "40", "0.1")
    wait_until(lambda: ctrl.ScanState == "running", 20, f"pipeline not running: {ctrl.status()}")
    wait_until(lambda: ctrl.CompletedEvents >= 3, 20, "no event completed")
    sid = ctrl.ScanId
    env.door.door.command_inout(how)
    run = env.door.wait(20)
    assert f"pipeline scan {sid} aborted (" in run.text, run.text
    assert ctrl.ScanId == sid
    assert ctrl.ScanState == "aborted"
    ledger = json.loads(ctrl.LedgerJson)
    assert ledger["cam"]["delivered"] >= 3


def test_a_reduced_value_is_a_column_of_the_scan(env: Stack, camera: list[Proc]) -> None:
    # reduced01 reads the reducer's published scalar "points" (results so far) at every point.
    start_camera(env, camera, 6, interval=0.05)
    defgh(env)
    env.senv("ActiveMntGrp", "mg_reduced")
    run = env.door.must("ascan", "mot01", "0", "5", "5", "0.1")
    sid = scan_id(run)
    header = next(line for line in run.output if "#Pt No" in line).split()
    assert "reduced01" in header
    column = header.index("reduced01") - 1  # "#Pt No" is two words
    values = [
        float(line.split()[column])
        for line in run.output
        if line.split()[:1] and line.split()[0].isdigit()
    ]
    assert len(values) == 6
    # The channel reads what the reducer published last (every PublishPeriod): the results of
    # this scan so far by the end (the first point may still see the last scan's value).
    assert 1 <= values[-1] <= 6
    assert values[1:] == sorted(values[1:])
    # In the scan file too.
    spec = (env.sardana.state / "scans" / "scans.dat").read_text()
    block = spec[spec.index(f"#S {sid} ") :]
    labels = next(line for line in block.splitlines() if line.startswith("#L ")).split()[1:]
    assert "reduced01" in labels


def test_the_spock_helpers_show_the_pipeline_and_set_its_parameters(env: Stack) -> None:
    run = env.door.must("dranspose_status")
    assert "State: " in run.text and "Scan: " in run.text
    assert "Streams: cam, sardana" in run.text
    assert f"Worker: {P}/worker-1" in run.text
    run = env.door.must("dranspose_get")
    assert "threshold = 0.5" in run.text
    run = env.door.must("dranspose_set", "threshold", "2.25")
    assert "threshold = 2.25" in run.text
    assert env.controller().read_attribute("param_threshold").value == 2.25
    assert "threshold = 2.25" in env.door.must("dranspose_get", "threshold").text
    run = env.door.run("dranspose_set", "threshold", "high")
    assert "parameter threshold: 'high' is not a double" in run.text
    run = env.door.run("dranspose_set", "nosuch", "1")
    assert "has no parameter 'nosuch' (it has: threshold)" in run.text
    env.door.must("dranspose_set", "threshold", "0.5")
    # Stop on an idle pipeline is harmless, and says where the pipeline is.
    assert re.search(
        r"dranspose: scan \S+ \w+: \d+/\d+ events", env.door.must("dranspose_stop").text
    )


def test_a_continuous_scan_with_two_frames_per_point(env: Stack, camera: list[Proc]) -> None:
    # ascanct: hardware-timed points (a dummy trigger/gate); the camera gives 2 frames a point.
    start_camera(env, camera, 12)
    defgh(env)
    env.senv("ActiveMntGrp", "mg_continuous")
    env.senv("DransposeStreams", "{'cam': {'stream': 'cam', 'frames_per_point': 2}}")
    run = env.door.must("ascanct", "mot01", "0", "5", "5", "0.1")
    sid = scan_id(run)
    assert "6 points, 14 events, streams cam (2/point), sardana" in run.text
    assert f"pipeline scan {sid} finished: 14/14 events" in run.text
    ctrl = env.controller()
    assert json.loads(ctrl.ScanMetadata)["kind"] == "continuous"
    red = env.suite.proxy(REDUCER)
    assert list(red.frame) == list(range(12))
    # Each point's record is in the first of its two events.
    points = red.point_nb
    assert list(points[0::2]) == list(range(6))
    assert np.all(np.isnan(points[1::2]))
