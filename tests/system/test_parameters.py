"""Parameters as controller attributes: typed, versioned mid-scan, recorded, memorized."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tango

from tango_dranspose.deploy.database import TangoDb
from tango_dranspose.deploy.processes import wait_until
from tests.runtime.procs import Proc
from tests.system.conftest import REPO, Events, Suite

CTRL, CAM, RED = "par/dranspose/controller", "par/dranspose/cam", "par/dranspose/reducer"
WORKERS = ["par/dranspose/worker-1", "par/dranspose/worker-2"]


def deployment(results: Path) -> dict[str, Any]:
    def dev(**props: Any) -> dict[str, Any]:
        extra = {k: v if isinstance(v, list) else [str(v)] for k, v in props.items()}
        return {"properties": {"Pipeline": ["params"], "EventPeriod": ["0.2"], **extra}}

    payload = {"PayloadPath": [str(REPO)]}
    return {
        "servers": {
            "DransposeController": {"par": {"DransposeController": {CTRL: dev()}}},
            "DransposeIngester": {
                "par": {
                    "DransposeIngester": {
                        CAM: dev(
                            Streams="cam", Protocol="STINS", UpstreamUrl="pull+tcp://127.0.0.1:1"
                        )
                    }
                }
            },
            "DransposeWorker": {
                "par": {
                    "DransposeWorker": {
                        w: dev(WorkerClass="tests.system.payloads:ScaleWorker", **payload)
                        for w in WORKERS
                    }
                }
            },
            "DransposeReducer": {
                "par": {
                    "DransposeReducer": {
                        RED: dev(
                            # ScaleReducer with a parameter model: roi is JSON text.
                            ReducerClass="tests.system.param_payloads:RoiScaleReducer",
                            ResultDir=str(results),
                            ResultWritePeriod="0.3",
                            **payload,
                        )
                    }
                }
            },
        }
    }


@pytest.fixture(scope="module")
def suite(tango_db: TangoDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    state = tmp_path_factory.mktemp("params")
    s = Suite(tango_db, deployment(state / "results"), state)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def ready(suite: Suite) -> tango.DeviceProxy:
    ctrl = suite.proxy(CTRL)
    wait_until(
        lambda: str(ctrl.state()) == "ON" and "2 workers" in ctrl.status()
        and {"param_scale", "param_roi"} <= {a.lower() for a in ctrl.get_attribute_list()},
        60,
        f"controller not ready: {ctrl.status()}",
    )  # fmt: skip
    return ctrl


def memorized(suite: Suite, attr: str) -> list[str]:
    """What the Tango DB keeps for ``attr`` of the controller (``__value``)."""
    db = tango.Database(*suite.db.tango_host.split(":"))
    props = db.get_device_attribute_property(CTRL, [attr])[attr]
    return list(props.get("__value", []))


def restart_controller(suite: Suite) -> tango.DeviceProxy:
    suite.children["DransposeController/par"].stop()
    suite.start(only="DransposeController/par")
    ctrl = ready(suite)
    # Memorized values are restored while the attribute is added, holding the device's
    # monitor; a write waits for that monitor and refreshes the values read afterwards.
    ctrl.write_attribute("param_label", "after restart")
    return ctrl


def camera(suite: Suite, n: int, interval: float) -> Proc:
    cam = Proc(
        "simulate", "stins", "-n", str(n), "--shape", "8x8", "-t", "push",
        "--interval", str(interval), name="cam",
    )  # fmt: skip
    suite.put_properties(CAM, {"UpstreamUrl": [f"pull+{cam.expect('listening')}"]})
    ing = suite.proxy(CAM)
    ing.Init()
    wait_until(lambda: str(ing.state()) == "ON", 30, f"ingester: {ing.status()}")
    return cam


def test_parameters_are_typed_attributes_with_descriptions(suite: Suite) -> None:
    ctrl = ready(suite)
    assert sorted(ctrl.Parameters) == ["label", "roi", "scale"]
    conf = ctrl.get_attribute_config("param_scale")
    assert conf.data_type == tango.CmdArgType.DevDouble
    assert conf.writable == tango.AttrWriteType.READ_WRITE
    assert "factor applied to frames" in conf.description
    assert ctrl.get_attribute_config("param_label").data_type == tango.CmdArgType.DevString
    assert ctrl.param_scale == 1.0  # the payload's default
    with pytest.raises(TypeError, match="numeric"):
        ctrl.write_attribute("param_scale", "not a number")  # refused by the Tango client
    with pytest.raises(tango.DevFailed) as refused:
        ctrl.Arm(json.dumps({"map": {"cam": [[{"constraint": 0}]]}, "parameters": {"scale": "x"}}))
    assert refused.value.args[0].reason == "DRANSPOSE_ArmRefused"
    assert "scale" in refused.value.args[0].desc


def test_a_change_mid_scan_applies_from_a_reported_event_and_the_file_has_both(
    suite: Suite,
) -> None:
    ctrl = ready(suite)
    ctrl.write_attribute("param_scale", 1.0)
    cam = camera(suite, 150, 0.02)
    try:
        cells = [[{"constraint": i % 2}] for i in range(150)]
        ctrl.Arm(json.dumps({"map": {"cam": cells}, "scan_id": "versions", "title": "v test"}))
        done = Events(ctrl, "CompletedEvents")
        done.wait(lambda v: v >= 20)
        done.close()
        red = suite.proxy(RED)
        wait_until(lambda: "shapes_count" in red.get_attribute_list(), 10, "no shapes_count")
        counts = Events(red, "shapes_count")
        # During a long scan the file is rewritten periodically, marked incomplete.
        partial = Path(suite.state) / "results" / "versions_processed.h5"
        wait_until(partial.exists, 10, "no result file during the scan")
        with h5py.File(partial, "r") as f:
            assert not f["tango_dranspose"].attrs["complete"]
        before = ctrl.ParameterVersion
        ctrl.write_attribute("param_scale", 2.5)
        assert ctrl.ParameterVersion == before + 1
        assert ctrl.param_scale == 2.5
        segments = json.loads(ctrl.ParameterHistoryJson)
        assert [s["version"] for s in segments] == [before, before + 1]
        switch = segments[1]["from_event"]
        assert 20 <= switch < 152
        state = Events(ctrl, "ScanState")
        state.wait(lambda v: v == "finished", 90)
        state.close()
        segments = json.loads(ctrl.ParameterHistoryJson)
        # Every worker reported the first event it computed with the new version: none
        # before the switch.
        assert set(segments[1]["applied"]) == set(WORKERS)
        assert all(e >= switch for e in segments[1]["applied"].values())
        assert any(
            line.startswith(f"v{before + 1} from event {switch}") for line in ctrl.ParameterHistory
        )
        wait_until(lambda: red.ResultFile == ctrl.ResultFile != "", 20, "no result file")
        # Published values are attributes of the right kind, updated during the scan (at a
        # bounded rate, so fewer events than results) and once more at the end.
        counts.wait(lambda v: v == 150)
        counts.close()
        assert 2 <= len(set(counts.values)) < 150
        assert red.shapes_count == 150
        positions = red.read_attribute("shapes_positions")
        assert positions.data_format == tango.AttrDataFormat.SPECTRUM
        assert list(red.shapes_positions[:3]) == [0.0, 1.0, 2.0]
        conf = red.get_attribute_config("shapes_positions")
        assert (conf.unit, conf.label) == ("mm", "motor positions")
        image = red.read_attribute("shapes_image")
        assert image.data_format == tango.AttrDataFormat.IMAGE and image.value.shape == (4, 3)
        assert image.value.dtype == np.uint16
        assert list(red.shapes_names) == ["a", "b"] and red.shapes_ok is True
        assert "last_scale -> last_scale (scalar float64)" in red.Results
        assert any(r.startswith("big: not an attribute (72 MiB") for r in red.Results)
        assert "big" not in [a.lower() for a in red.get_attribute_list()]
        with h5py.File(ctrl.ResultFile, "r") as f:
            event = f["event"][()]
            worker_scale, reducer_scale = f["worker_scale"][()], f["reducer_scale"][()]
            record = f["tango_dranspose"]
            versions = {k: dict(v.attrs) for k, v in record["parameters"].items()}
            assert json.loads(record["metadata"][()])["title"] == "v test"
            assert record.attrs["title"] == "v test"
            assert "parts" in json.loads(record["trigger_map"][()])
            assert record["ledger/cam"].attrs["delivered"] == 152
            assert record.attrs["complete"]
            assert "tango-dranspose" in record["software"].attrs
            assert record[f"parameters/v{before + 1}/scale"][()].decode() == "2.5"
        np.testing.assert_array_equal(worker_scale[event < switch], 1.0)
        np.testing.assert_array_equal(worker_scale[event >= switch], 2.5)
        np.testing.assert_array_equal(reducer_scale, worker_scale)  # each with its own version
        new = versions[f"v{before + 1}"]
        assert new["from_event"] == switch
        assert new["first_event"] == switch
        assert sum(v["results"] for v in versions.values()) == len(event) == 150
    finally:
        cam.stop()


def test_parameters_survive_a_controller_restart(suite: Suite) -> None:
    ctrl = ready(suite)
    ctrl.write_attribute("param_label", "kept")
    ctrl.write_attribute("param_scale", 4.0)
    suite.children["DransposeController/par"].stop()
    suite.start(only="DransposeController/par")
    ctrl = ready(suite)
    wait_until(lambda: ctrl.param_scale == 4.0, 30, f"scale is {ctrl.param_scale}")
    assert ctrl.param_label == "kept"


def test_a_refused_write_is_neither_applied_nor_memorized(suite: Suite) -> None:
    ctrl = ready(suite)
    conf = ctrl.get_attribute_config("param_roi")
    assert conf.data_type == tango.CmdArgType.DevString
    assert "JSON: tuple[int, int]" in conf.description
    ctrl.write_attribute("param_roi", "[2, 5]")
    assert memorized(suite, "param_roi") == ["[2, 5]"]
    version = ctrl.ParameterVersion
    # The probe of issue 13: this was accepted and memorized, and every later event failed.
    with pytest.raises(tango.DevFailed) as refused:
        ctrl.write_attribute("param_roi", "[1,2")
    err = refused.value.args[0]
    assert err.reason == "DRANSPOSE_InvalidParameter"
    assert err.desc.startswith("parameter 'roi' takes JSON (tuple[int, int]), got b'[1,2': ")
    assert ctrl.param_roi == "[2, 5]"
    assert ctrl.ParameterVersion == version  # no new version: the workers were sent nothing
    assert memorized(suite, "param_roi") == ["[2, 5]"]  # Tango kept the last good value
    # Through Arm as well: refused before anything is armed, nothing applied.
    request = {"map": {"cam": [[{"constraint": 0}]]}, "parameters": {"roi": "[1,2"}}
    with pytest.raises(tango.DevFailed) as refused:
        ctrl.Arm(json.dumps(request))
    assert refused.value.args[0].reason == "DRANSPOSE_ArmRefused"
    assert "parameter 'roi' takes JSON" in refused.value.args[0].desc
    assert (ctrl.param_roi, ctrl.ParameterVersion) == ("[2, 5]", version)
    # A restart applies the memorized good value, never the refused one.
    ctrl = restart_controller(suite)
    assert ctrl.param_roi == "[2, 5]"


def test_a_bad_memorized_value_is_not_applied_after_a_restart(suite: Suite) -> None:
    """A value memorized before it was refused (an older version, an edited DB): the
    restarted controller leaves the parameter at its default and the workers never see it."""
    ready(suite)
    db = tango.Database(*suite.db.tango_host.split(":"))
    db.put_device_attribute_property(CTRL, {"param_roi": {"__value": ["[9,"]}})
    ctrl = restart_controller(suite)
    assert ctrl.param_label == "after restart"  # the refresh the assertions below rely on
    assert ctrl.param_roi == "[0, 8]"  # the payload's default
    ctrl.write_attribute("param_roi", "[1, 3]")  # and it can be set again
    assert memorized(suite, "param_roi") == ["[1, 3]"]


def test_the_reducer_device_keeps_result_files_in_its_result_dir(suite: Suite) -> None:
    """AllowedResultDirs is not set: ResultDir alone is allowed (the device's default)."""
    ctrl = ready(suite)
    results = Path(suite.state) / "results"
    outside = Path(suite.state) / "elsewhere" / "x.h5"
    cells = {"cam": [[{"constraint": 0}]]}
    with pytest.raises(tango.DevFailed) as refused:
        ctrl.Arm(json.dumps({"map": cells, "scan_id": "../../x"}))
    assert refused.value.args[0].reason == "DRANSPOSE_ArmRefused"
    assert refused.value.args[0].desc.startswith("scan_id '../../x' is refused")
    with pytest.raises(tango.DevFailed) as refused:
        ctrl.Arm(json.dumps({"map": cells, "scan_id": "out", "output_file": str(outside)}))
    assert refused.value.args[0].desc == (
        f"arming failed: {RED}: output_file {outside} is outside the reducer's allowed result "
        f"directories ({results})"
    )
    assert not outside.parent.exists()
