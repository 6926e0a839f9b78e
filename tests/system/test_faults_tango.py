"""Faults in the Tango suite: a worker's server is SIGKILLed mid-scan; the scan still finishes.

Its own pipeline (controller, one camera ingester, three workers, a reducer) on the session's
Tango DB, with the pair payload of the runtime fault tests: what a user sees is asserted
through the controller's attributes and change events, and the result file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tango

from tango_dranspose.core.ledger import StreamLedger
from tango_dranspose.deploy.database import TangoDb
from tango_dranspose.deploy.processes import wait_until
from tests.runtime.procs import Proc
from tests.system.conftest import REPO, Events, Suite
from tests.system.test_devices import result_tree

P = "flt/dranspose"
CONTROLLER = f"{P}/controller"
CAM = f"{P}/cam"
WORKERS = [f"{P}/worker-{i}" for i in (1, 2, 3)]
N = 20_000


def deployment(results: Path) -> dict[str, Any]:
    def dev(**props: Any) -> dict[str, Any]:
        return {
            "properties": {
                "Pipeline": ["faults"],
                "EventPeriod": ["0.2"],
                **{k: v if isinstance(v, list) else [str(v)] for k, v in props.items()},
            }
        }

    payload = {"PayloadPath": [str(REPO)]}
    return {
        "servers": {
            "DransposeController": {"flt": {"DransposeController": {CONTROLLER: dev()}}},
            "DransposeIngester": {
                "flt": {
                    "DransposeIngester": {
                        CAM: dev(
                            Streams="cam", Protocol="STINS", UpstreamUrl="pull+tcp://127.0.0.1:1"
                        )
                    }
                }
            },
            "DransposeWorker": {
                f"flt-{i}": {
                    "DransposeWorker": {
                        WORKERS[i - 1]: dev(
                            WorkerClass="tests.runtime.faults:PairWorker", **payload
                        )
                    }
                }
                for i in (1, 2, 3)
            },
            "DransposeReducer": {
                "flt": {
                    "DransposeReducer": {
                        f"{P}/reducer": dev(
                            ReducerClass="tests.runtime.faults:PairReducer",
                            ResultDir=str(results),
                            **payload,
                        )
                    }
                }
            },
        }
    }


@pytest.fixture(scope="module")
def suite(tango_db: TangoDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    if tango_db.kind != "pytango-db":
        pytest.skip("the fault tests run on pytango-db (test_devices covers the C++ DB)")
    state = tmp_path_factory.mktemp("faults")
    s = Suite(tango_db, deployment(state / "results"), state)
    try:
        s.start()
        ctrl = s.proxy(CONTROLLER)
        wait_until(
            lambda: str(ctrl.state()) == "ON" and len(ctrl.Workers) == 3,
            60,
            f"controller not ON with 3 workers: {ctrl.status()}",
        )
        yield s
    finally:
        s.stop()


def camera(suite: Suite, procs: list[Proc]) -> None:
    cam = Proc(
        "simulate", "stins", "-n", str(N), "--shape", "8x8", "-t", "push", name="cam"
    )  # fmt: skip
    procs.append(cam)
    suite.put_properties(CAM, {"UpstreamUrl": [f"pull+{cam.expect('listening')}"]})
    ing = suite.proxy(CAM)
    ing.Init()
    wait_until(lambda: str(ing.state()) == "ON", 30, f"{CAM} not ON: {ing.status()}")


def scan(ctrl: tango.DeviceProxy, scan_id: str) -> None:
    cells = [[{"constraint": i // 2}] for i in range(N)]
    ctrl.Arm(json.dumps({"map": {"cam": cells}, "scan_id": scan_id}))


def final(ctrl: tango.DeviceProxy, timeout: float = 120) -> str:
    events = Events(ctrl, "ScanState")
    try:
        return str(
            events.wait(lambda v: v in ("finished", "failed", "stopped", "interrupted"), timeout)
        )
    finally:
        events.close()


def test_a_worker_server_killed_mid_scan_and_the_scan_still_finishes(suite: Suite) -> None:
    procs: list[Proc] = []
    try:
        ctrl = suite.proxy(CONTROLLER)
        camera(suite, procs)
        scan(ctrl, "calm")
        assert final(ctrl) == "finished", ctrl.status()
        assert ctrl.Redispatched == 0
        calm = result_tree(ctrl.ResultFile)

        camera(suite, procs)
        state = Events(ctrl, "State")
        scan(ctrl, "killed")
        done = Events(ctrl, "CompletedEvents")
        done.wait(lambda v: v >= N // 4)
        done.close()
        suite.children["DransposeWorker/flt-2"].kill()
        # Degraded, not stopped: ALARM while it runs on the two workers left.
        state.wait(lambda v: v == tango.DevState.ALARM, timeout=15)
        state.close()
        assert final(ctrl) == "finished", ctrl.status()
        assert ctrl.Redispatched > 0
        assert f"{WORKERS[1]}: died" in list(ctrl.LostComponents)
        assert ctrl.LostEvents == 0
        for stream, raw in json.loads(ctrl.LedgerJson).items():
            assert StreamLedger.model_validate(raw).balance() == 0, (stream, raw)
        assert "sent again" in ctrl.Ledger[0]
        killed = result_tree(ctrl.ResultFile)
        assert list(killed["count"]) == [1] * N
        for key in ("event", "value", "pair", "count"):
            np.testing.assert_array_equal(killed[key], calm[key])
        # The result file holds the complete ledger and the event accounting.
        with h5py.File(ctrl.ResultFile) as f:
            group = f["tango_dranspose"]
            assert int(group["ledger/cam"].attrs["expected"]) == N + 2
            accounting = json.loads(group["accounting"][()])
            assert WORKERS[1] in accounting["dead"]
    finally:
        for p in procs:
            p.stop()
