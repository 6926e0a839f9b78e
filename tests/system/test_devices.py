"""The device suite run by Tango alone: registered with dsconfig, servers as processes, scans
armed and watched through device commands, attributes and change events."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tango

from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.core.ledger import StreamLedger
from tango_dranspose.deploy.database import TangoDb
from tango_dranspose.deploy.processes import wait_until
from tests.runtime.procs import Proc
from tests.system.conftest import REPO, Events, Suite

P = "sys/dranspose"
CONTROLLER = f"{P}/controller"
CAM, PANDA, SARDANA = f"{P}/cam", f"{P}/panda", f"{P}/sardana"
WORKERS = [f"{P}/worker-{i}" for i in (1, 2, 3)]
REDUCER = f"{P}/reducer"
FINAL = ("finished", "stopped", "aborted", "failed", "interrupted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployment(results: Path, http_port: int) -> dict[str, Any]:
    def dev(**props: Any) -> dict[str, Any]:
        return {
            "properties": {
                "Pipeline": ["systest"],
                "EventPeriod": ["0.2"],
                **{k: v if isinstance(v, list) else [str(v)] for k, v in props.items()},
            }
        }

    workers = {
        f"sys-{i}": {
            "DransposeWorker": {
                WORKERS[i - 1]: dev(
                    WorkerClass="tests.runtime.payloads:ProbeWorker",
                    PayloadPath=[str(REPO)],
                    # The third also serves debug copies, and keeps them for people to see.
                    Tags=["generic", "debug"] if i == 3 else ["generic"],
                )
            }
        }
        for i in (1, 2, 3)
    }
    return {
        "servers": {
            "DransposeController": {"sys": {"DransposeController": {CONTROLLER: dev()}}},
            "DransposeIngester": {
                "sys": {
                    "DransposeIngester": {
                        # The upstreams are set per test (simulators bind free ports).
                        CAM: dev(
                            Streams="cam", Protocol="STINS", UpstreamUrl="pull+tcp://127.0.0.1:1"
                        ),
                        PANDA: dev(
                            Streams="pcap_rot", Protocol="PCAP_RAW", UpstreamUrl="tcp://127.0.0.1:1"
                        ),
                        SARDANA: dev(
                            Streams="sardana",
                            Protocol="sardana",
                            UpstreamUrl=f"http://127.0.0.1:{http_port}",
                        ),
                    }
                }
            },
            "DransposeWorker": workers,
            "DransposeReducer": {
                "sys": {
                    "DransposeReducer": {
                        REDUCER: dev(
                            ReducerClass="tests.runtime.payloads:ColumnsReducer",
                            PayloadPath=[str(REPO)],
                            ResultDir=str(results),
                        )
                    }
                }
            },
        }
    }


@pytest.fixture(scope="module")
def suite(tango_db: TangoDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    state = tmp_path_factory.mktemp("suite")
    http_port = free_port()
    s = Suite(tango_db, deployment(state / "results", http_port), state)
    s.http_port = http_port  # type: ignore[attr-defined]
    assert s.registration.applied
    try:
        s.start()
        ctrl = s.proxy(CONTROLLER)
        wait_until(lambda: str(ctrl.state()) == "ON", 60, f"controller not ON: {ctrl.status()}")
        yield s
    finally:
        s.stop()


@pytest.fixture
def simulators() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for p in procs:
        p.stop()


def point_ingester(suite: Suite, device: str, url: str) -> None:
    """Change an upstream as an operator would: set the property, run Init."""
    suite.put_properties(device, {"UpstreamUrl": [url]})
    ing = suite.proxy(device)
    ing.Init()
    wait_until(lambda: str(ing.state()) == "ON", 30, f"{device} not ON: {ing.status()}")


def start_camera(suite: Suite, simulators: list[Proc], n: int, interval: float = 0.0) -> None:
    cam = Proc(
        "simulate", "stins", "-n", str(n), "--shape", "8x8", "-t", "push",
        "--interval", str(interval), "--repeat", "5", name="cam",
    )  # fmt: skip
    simulators.append(cam)
    point_ingester(suite, CAM, f"pull+{cam.expect('listening')}")


def ready(suite: Suite) -> tango.DeviceProxy:
    ctrl = suite.proxy(CONTROLLER)
    wait_until(
        lambda: (
            str(ctrl.state()) in ("ON", "ALARM")
            and ctrl.ScanState in ("idle", *FINAL)
            and not any("not running" in w or "stopped answering" in w for w in ctrl.Workers)
        ),
        60,
        f"controller not ready: {ctrl.status()}",
    )
    return ctrl


def arm(ctrl: tango.DeviceProxy, cells: dict[str, list[Any]], **extra: Any) -> str:
    return str(ctrl.Arm(json.dumps({"map": cells, **extra})))


def wait_final(ctrl: tango.DeviceProxy, timeout: float = 60.0) -> str:
    events = Events(ctrl, "ScanState")
    try:
        state = str(events.wait(lambda v: v in FINAL, timeout))
    finally:
        events.close()
    assert_ledger_balanced(ctrl)
    return state


def assert_ledger_balanced(ctrl: tango.DeviceProxy) -> None:
    """After every scan: each expected frame of each stream has exactly one outcome."""
    for stream, raw in json.loads(ctrl.LedgerJson).items():
        assert StreamLedger.model_validate(raw).balance() == 0, (stream, raw)


def result_tree(path: str) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return read_tree(f)


def test_a_three_stream_scan_by_tango_commands_only(suite: Suite, simulators: list[Proc]) -> None:
    points = 6
    start_camera(suite, simulators, points)
    panda = Proc("simulate", "positioncap", "-n", str(points), "-t", "tcp", name="panda")
    simulators.append(panda)
    point_ingester(suite, PANDA, panda.expect("listening"))
    ctrl = ready(suite)
    progress = Events(ctrl, "CompletedEvents")
    cells = [[{"constraint": i % 2}] for i in range(points)]
    scan_id = arm(
        ctrl,
        {"cam": cells, "pcap_rot": cells, "sardana": cells},
        scan_id="three",
        title="three streams",
    )
    assert scan_id == "three"
    assert ctrl.TotalEvents == points + 2
    assert ctrl.ScanState == "running"
    assert str(ctrl.state()) == "RUNNING"
    http = suite.http_port  # type: ignore[attr-defined]
    sardana = Proc(
        "simulate", "sardana", "-n", str(points), "-t", "http",
        "--post-to", f"http://127.0.0.1:{http}", name="sardana",
    )  # fmt: skip
    simulators.append(sardana)
    assert wait_final(ctrl) == "finished"
    progress.wait(lambda v: v == points + 2)
    progress.close()
    assert ctrl.CompletedEvents == points + 2
    assert ctrl.Progress == pytest.approx(100.0)
    assert str(ctrl.state()) == "ON", ctrl.status()
    assert "three finished" in ctrl.status()
    ledger = json.loads(ctrl.LedgerJson)
    assert {s: ledger[s]["delivered"] for s in ledger} == {
        "cam": points + 2,
        "pcap_rot": points + 2,
        "sardana": points + 2,
    }
    assert sorted(ctrl.Ledger)[0].startswith("cam: delivered 8, discarded 0, missing 0, dropped 0")
    assert json.loads(ctrl.ScanMetadata)["title"] == "three streams"
    red = suite.proxy(REDUCER)
    wait_until(lambda: red.ResultFile == ctrl.ResultFile != "", 20, "no result file reported")
    tree = result_tree(ctrl.ResultFile)
    data = tree["event"] >= 1
    data &= tree["event"] <= points
    assert list(tree["frame"][data]) == list(range(points))
    assert list(tree["value_sardana"][data]) == list(range(points))
    assert np.all(np.isfinite(tree["value_pcap_rot"][data]))
    # The reducer's published scalar is an attribute, with the final value.
    assert "count -> count (scalar int64)" in red.Results
    assert "value_sardana -> value_sardana (spectrum float64)" in red.Results
    assert list(red.value_sardana[data]) == list(range(points))
    assert red.read_attribute("count").value == tree["count"]
    workers = [suite.proxy(w) for w in WORKERS]
    assert sum(w.ProcessedEvents for w in workers) >= points + 2


def test_an_invalid_map_is_refused_readably_and_the_next_scan_works(
    suite: Suite, simulators: list[Proc]
) -> None:
    start_camera(suite, simulators, 4)
    ctrl = ready(suite)
    with pytest.raises(tango.DevFailed) as refused:
        arm(ctrl, {"eiger": [[{"constraint": 0}]]})
    err = refused.value.args[0]
    assert err.reason == "DRANSPOSE_ArmRefused"
    assert "no ingester serves stream(s) eiger" in err.desc
    assert "cam" in err.desc  # it says which streams exist
    with pytest.raises(tango.DevFailed) as too_many:
        arm(ctrl, {"cam": [[{"constraint": c} for c in range(5)]]})
    assert "worker" in too_many.value.args[0].desc
    assert "5" in too_many.value.args[0].desc and "3" in too_many.value.args[0].desc
    with pytest.raises(tango.DevFailed) as bad_json:
        ctrl.Arm("{not json")
    assert bad_json.value.args[0].reason == "DRANSPOSE_InvalidRequest"
    assert "not valid JSON" in bad_json.value.args[0].desc
    with pytest.raises(tango.DevFailed) as bad_cell:
        arm(ctrl, {"cam": [[{"constraint": "x"}]]})
    assert "invalid trigger map" in bad_cell.value.args[0].desc
    assert str(ctrl.state()) in ("ON", "ALARM")
    cells = [[{"constraint": i}] for i in range(4)]
    arm(ctrl, {"cam": cells})
    assert wait_final(ctrl) == "finished"
    assert ctrl.CompletedEvents == 6


def test_two_scans_in_a_row(suite: Suite, simulators: list[Proc]) -> None:
    cells = [[{"constraint": i % 3}] for i in range(5)]
    files = []
    for n in (1, 2):
        # A fresh camera per scan: an unpaced simulator's repetitions all sit in socket
        # buffers at once, and the ingester drops what is left when the scan ends.
        start_camera(suite, simulators, 5)
        ctrl = ready(suite)
        arm(ctrl, {"cam": cells}, scan_id=f"row{n}")
        assert wait_final(ctrl) == "finished"
        assert ctrl.ScanId == f"row{n}"
        assert ctrl.CompletedEvents == 7
        files.append(ctrl.ResultFile)
    assert files[0].endswith("row1_processed.h5") and files[1].endswith("row2_processed.h5")
    for path in files:
        tree = result_tree(path)
        data = (tree["event"] >= 1) & (tree["event"] <= 5)
        assert list(tree["frame"][data]) == list(range(5))


def test_stop_in_mid_scan(suite: Suite, simulators: list[Proc]) -> None:
    start_camera(suite, simulators, 400, interval=0.02)
    ctrl = ready(suite)
    arm(ctrl, {"cam": [[{"constraint": i % 2}] for i in range(400)]}, scan_id="stopped")
    done = Events(ctrl, "CompletedEvents")  # after Arm: the first value is this scan's
    done.wait(lambda v: v >= 5)
    done.close()
    ctrl.Stop()
    assert ctrl.ScanState == "stopped"
    assert 5 <= ctrl.CompletedEvents < 402
    assert "stopped" in ctrl.status()
    # Every frame the map expected is accounted for: what never came is counted.
    cam = json.loads(ctrl.LedgerJson)["cam"]
    assert cam["expected"] == 402
    accounted = cam["delivered"] + cam["discarded"] + cam["missing"] + cam["not_received"]
    assert accounted == 402 and cam["not_received"] > 0
    assert f"not received {cam['not_received']} of 402 expected" in ctrl.Ledger[0]
    # Stop on an idle pipeline is harmless.
    ctrl.Stop()
    assert ctrl.ScanState == "stopped"


def test_a_killed_worker_is_reported_and_the_scan_and_the_next_one_finish(
    suite: Suite, simulators: list[Proc]
) -> None:
    start_camera(suite, simulators, 400, interval=0.02)
    ctrl = ready(suite)
    state = Events(ctrl, "State")
    arm(ctrl, {"cam": [[{"constraint": i % 3}] for i in range(400)]}, scan_id="crash")
    done = Events(ctrl, "CompletedEvents")
    done.wait(lambda v: v >= 3)
    done.close()
    victim = suite.children["DransposeWorker/sys-3"]
    victim.kill()
    state.wait(lambda v: v == tango.DevState.ALARM, timeout=15)
    state.close()
    # Degraded, not stuck: its events went to the two workers left.
    assert f"{WORKERS[2]} died" in ctrl.status()
    assert wait_final(ctrl) == "finished"
    assert ctrl.CompletedEvents == 402
    assert ctrl.Redispatched > 0
    # The next scan runs on the two workers left (the map needs one at a time).
    start_camera(suite, simulators, 4)
    arm(ctrl, {"cam": [[{"constraint": i}] for i in range(4)]}, scan_id="after-crash")
    assert wait_final(ctrl) == "finished"
    assert ctrl.CompletedEvents == 6
    # Bring the worker back for later tests, as the Starter would.
    suite.start(only="DransposeWorker/sys-3")
    ready(suite)


def test_a_device_restarted_by_its_server_registers_again(
    suite: Suite, simulators: list[Proc]
) -> None:
    start_camera(suite, simulators, 6)
    worker = suite.proxy(WORKERS[0])
    before = worker.ProcessedEvents
    admin = tango.DeviceProxy(worker.adm_name())
    admin.DevRestart(WORKERS[0])
    worker = suite.proxy(WORKERS[0])
    wait_until(lambda: str(worker.state()) == "ON", 30, f"restarted worker: {worker.status()}")
    assert worker.ProcessedEvents == 0 <= before  # a new service instance
    ctrl = ready(suite)
    cells = [[{"constraint": i % 3}] for i in range(6)]
    arm(ctrl, {"cam": cells}, scan_id="after-restart")
    assert wait_final(ctrl) == "finished"
    assert worker.ProcessedEvents > 0


def test_payload_errors_are_counted_and_alarmed(suite: Suite, simulators: list[Proc]) -> None:
    start_camera(suite, simulators, 6)
    ctrl = ready(suite)
    cells = [[{"constraint": i % 3}] for i in range(6)]
    arm(ctrl, {"cam": cells}, scan_id="errors", parameters={"fail_every": 3})
    assert wait_final(ctrl) == "finished"
    assert ctrl.WorkerErrors == 2  # frames 0 and 3
    assert str(ctrl.state()) == "ALARM"
    assert "2 worker errors" in ctrl.status()
    assert "refusing frame" in ctrl.LastError
    failing = [w for w in (suite.proxy(n) for n in WORKERS) if str(w.state()) == "ALARM"]
    assert failing and all("refusing frame" in w.LastError for w in failing)
    # Parameters stay set for later scans until changed.
    ctrl.write_attribute("param_fail_every", 0)


def test_every_component_shows_a_readable_status(suite: Suite) -> None:
    ctrl = ready(suite)
    assert len(ctrl.Workers) == 3 and len(ctrl.Ingesters) == 3 and len(ctrl.Reducers) == 1
    assert sorted(ctrl.Streams) == ["cam", "pcap_rot", "sardana"]
    assert ctrl.ControlAddress.startswith("tcp://127.0.0.1:")
    cam = suite.proxy(CAM)
    assert cam.StreamNames == ("cam",)
    assert "upstreams connect when a scan is armed" in cam.status() or "Armed" in cam.status()
    red = suite.proxy(REDUCER)
    assert "ColumnsReducer" in red.status()


def test_a_misconfigured_device_is_in_fault_saying_which_property(
    suite: Suite, tango_db: TangoDb, tmp_path: Path
) -> None:
    config = {
        "servers": {
            "DransposeWorker": {
                "broken": {
                    "DransposeWorker": {
                        "sys/broken/unset": {"properties": {"Pipeline": ["broken"]}},
                        "sys/broken/nosuch": {
                            "properties": {
                                "Pipeline": ["broken"],
                                "WorkerClass": ["nosuch_package.analysis:Worker"],
                            }
                        },
                    }
                }
            }
        }
    }
    broken = Suite(tango_db, config, tmp_path)
    try:
        broken.start()
        unset, nosuch = broken.proxy("sys/broken/unset"), broken.proxy("sys/broken/nosuch")
        assert str(unset.state()) == "FAULT"
        assert "WorkerClass property is not set" in unset.status()
        assert str(nosuch.state()) == "FAULT"
        assert "nosuch_package" in nosuch.status()
        # They belong to another pipeline of the same DB: this one does not see them.
        ctrl = ready(suite)
        assert not any("broken" in line for line in ctrl.Workers)
        assert len(ctrl.Workers) == 3
    finally:
        broken.stop()


def test_a_debug_worker_shows_the_last_events_it_received(
    suite: Suite, simulators: list[Proc]
) -> None:
    start_camera(suite, simulators, 6)
    ctrl = ready(suite)
    cells = [[{"constraint": i % 2}, {"tags": ["debug"]}] for i in range(6)]
    arm(ctrl, {"cam": cells}, scan_id="debug")
    assert wait_final(ctrl) == "finished"
    dbg = suite.proxy(WORKERS[2])
    wait_until(lambda: len(dbg.DebugEventNumbers) >= 8, 30, "debug events not kept")
    kept = list(dbg.DebugEventNumbers)
    assert kept[-8:] == list(range(8))  # start, 6 images, end: in order
    dbg.DebugEvent = 3  # the third image (event 0 is the start message)
    wait_until(lambda: dbg.debug_cam_text.startswith("event 3:"), 30, "event 3 not shown")
    assert "Stream1Data(htype='image', frame=2" in dbg.debug_cam_text
    image = dbg.read_attribute("debug_cam")
    assert image.data_format == tango.AttrDataFormat.IMAGE and image.value.shape == (8, 8)
    dbg.DebugEvent = -1
    wait_until(lambda: dbg.debug_cam_text.startswith("event 7:"), 30, "event 7 not shown")
    assert "series_end" in dbg.debug_cam_text.lower() or "end" in dbg.debug_cam_text
