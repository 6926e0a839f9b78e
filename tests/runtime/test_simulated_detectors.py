"""System test: the `simulate` command as three detectors, each over its own transport.

A camera (STINS over ZMQ PUSH), the PandA position capture (ASCII over TCP with its
handshake) and the Sardana recorder (HTTP POSTs into the ingester) deliver one frame per
point into real ingester, worker and reducer processes.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import h5py
import numpy as np

from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.runtime.control import ControlClient
from tests.runtime.procs import REPO, Proc

POINTS = 6


def free_port() -> int:
    # The HTTP upstream binds only once the scan is armed, so its port is chosen here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_camera_panda_and_sardana_simulators_through_the_pipeline(tmp_path: Path) -> None:
    procs: list[Proc] = []
    try:
        cam = Proc(
            "simulate", "stins", "-n", str(POINTS), "--shape", "8x8", "-t", "push", name="cam"
        )
        panda = Proc("simulate", "positioncap", "-n", str(POINTS), "-t", "tcp", name="panda")
        procs += [cam, panda]
        cam_url, panda_url = cam.expect("listening"), panda.expect("listening")
        http = f"http://127.0.0.1:{free_port()}"
        sched = Proc("serve", "scheduler", name="scheduler")
        procs.append(sched)
        control, client_address = sched.expect("control"), sched.expect("client")
        procs.append(
            Proc(
                "serve",
                "ingester",
                "--name",
                "ing",
                "--scheduler",
                control,
                "--stream",
                f"cam:STINS=pull+{cam_url}",
                "--stream",
                f"pcap_rot:PCAP_RAW={panda_url}",
                "--stream",
                f"sardana:sardana={http}",
                name="ing",
            )
        )
        for w in ("w0", "w1"):
            procs.append(
                Proc(
                    "serve",
                    "worker",
                    "--name",
                    w,
                    "--scheduler",
                    control,
                    "--worker-class",
                    "tests.runtime.payloads:ProbeWorker",
                    "--payload-path",
                    str(REPO),
                    name=w,
                )
            )
        procs.append(
            Proc(
                "serve",
                "reducer",
                "--name",
                "red",
                "--scheduler",
                control,
                "--reducer-class",
                "tests.runtime.payloads:ColumnsReducer",
                "--payload-path",
                str(REPO),
                "--output-dir",
                str(tmp_path),
                name="red",
            )
        )
        client = ControlClient(client_address)
        client.wait_for({"ingester": 1, "worker": 2, "reducer": 1}, 90)
        cells = [[{"constraint": i % 2}] for i in range(POINTS)]
        map_file = tmp_path / "map.json"
        map_file.write_text(json.dumps({"cam": cells, "pcap_rot": cells, "sardana": cells}))
        scan = Proc(
            "scan",
            "--client",
            client_address,
            "--map",
            str(map_file),
            "--scan-id",
            "sim",
            "--wait",
            "--timeout",
            "60",
            name="scan",
        )
        procs.append(scan)
        assert scan.expect("armed") == "scan sim"
        # The recorder posts once the scan is armed (the ingester listens only then).
        recorder = Proc(
            "simulate",
            "sardana",
            "-n",
            str(POINTS),
            "-t",
            "http",
            "--post-to",
            http,
            name="recorder",
        )
        procs.append(recorder)
        assert scan.popen.wait(60) == 0, "".join(scan.stderr)
        status = client.request("status")["scan"]
        assert status["state"] == "finished", status
        assert recorder.popen.wait(30) == 0
        with h5py.File(tmp_path / "sim_processed.h5") as f:
            tree = read_tree(f)
        points = [k for k, e in enumerate(tree["event"]) if 1 <= e <= POINTS]
        assert len(points) == POINTS
        assert all(tree["streams"][k] == "cam,pcap_rot,sardana" for k in points)
        np.testing.assert_array_equal([tree["value_sardana"][k] for k in points], np.arange(POINTS))
        assert all(tree["value_cam"][k] > 0 for k in points)
        assert all(np.isfinite(tree["value_pcap_rot"][k]) for k in points)
        assert {s: status["ledger"][s]["delivered"] for s in ("cam", "pcap_rot", "sardana")} == {
            "cam": POINTS + 2,
            "pcap_rot": POINTS + 2,
            "sardana": POINTS + 2,
        }
    finally:
        for p in reversed(procs):
            p.stop()
