"""Faults for real: SIGKILL a worker, the reducer or an ingester mid-scan; restart a detector.

Each test runs its own deployment of processes (scheduler, one ingester, three workers, a
reducer) on 127.0.0.1 and plays the detector from the test process. What is asserted is what a
user sees: the scan's state and reason, the ledger, the result file.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zmq

from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.core.ledger import StreamLedger
from tango_dranspose.runtime.control import ControlClient
from tests.runtime.faults import Feeder, expected_pairs, pairs_map, stins_series
from tests.runtime.procs import REPO, Proc

PAYLOAD = ["--payload-path", str(REPO)]
WORKERS = ("w0", "w1", "w2")
# Generous for a loaded machine; the promise is seconds, the measured time is printed.
FAIL_WITHIN = 5.0


@dataclass
class Crew:
    procs: dict[str, Proc]
    client: ControlClient
    feeder: Feeder
    results: Path
    control: str

    def start(self, kind: str, name: str) -> Proc:
        args = {
            "ingester": ["--stream", f"cam:STINS=pull+{self.feeder.address}"],
            "worker": ["--worker-class", "tests.runtime.faults:PairWorker", *PAYLOAD],
            "reducer": [
                "--reducer-class",
                "tests.runtime.faults:PairReducer",
                "--output-dir",
                str(self.results),
                *PAYLOAD,
            ],
        }[kind]
        proc = Proc("serve", kind, "--name", name, "--scheduler", self.control, *args, name=name)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        self.procs[name].stop(signal.SIGKILL)

    def status(self) -> dict[str, Any]:
        return self.client.request("status")

    def wait_state(self, timeout: float = 60) -> dict[str, Any]:
        return self.client.wait(timeout)["scan"]

    def tree(self, scan_id: str) -> dict[str, Any]:
        with h5py.File(self.results / f"{scan_id}_processed.h5") as f:
            return read_tree(f)


@pytest.fixture
def crew(tmp_path: Path) -> Iterator[Crew]:
    ctx: zmq.Context[Any] = zmq.Context()
    feeder = Feeder(ctx)
    procs: dict[str, Proc] = {}
    try:
        procs["scheduler"] = Proc("serve", "scheduler", "--window", "16", name="scheduler")
        control = procs["scheduler"].expect("control")
        client = ControlClient(procs["scheduler"].expect("client"))
        c = Crew(procs, client, feeder, tmp_path, control)
        c.start("ingester", "ing")
        for w in WORKERS:
            c.start("worker", w)
        c.start("reducer", "red")
        client.wait_for({"ingester": 1, "worker": 3, "reducer": 1}, 90)
        yield c
    finally:
        for p in procs.values():
            p.stop()
        feeder.close()
        ctx.destroy(0)


def assert_balanced(scan: dict[str, Any]) -> None:
    """The ledger's invariant: every expected frame has exactly one outcome."""
    for stream, raw in scan["ledger"].items():
        led = StreamLedger.model_validate(raw)
        assert led.balance() == 0, (stream, raw)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)  # polling a condition, not waiting for a state


N = 20_000


def test_a_killed_worker_s_events_go_to_the_others_and_the_scan_completes(crew: Crew) -> None:
    messages = stins_series(N)
    values, pairs = expected_pairs(messages)

    crew.client.arm(pairs_map(N), scan_id="calm")
    crew.feeder.send(messages)
    calm = crew.wait_state(120)
    assert calm["state"] == "finished", calm
    assert calm["redispatched"] == 0
    reference = crew.tree("calm")
    np.testing.assert_allclose(reference["value"], values)
    np.testing.assert_allclose(reference["pair"][1::2], pairs[1::2])

    crew.client.arm(pairs_map(N), scan_id="kill")
    crew.feeder.send(messages)
    crew.client.wait_until(N // 4, 60)
    killed_at = time.monotonic()
    crew.kill("w1")
    # Detected within 2 s: the controller's view names it.
    wait_until(lambda: "w1" in crew.status()["scan"]["lost_components"], 2.5, "w1 declared dead")
    detected = time.monotonic() - killed_at
    scan = crew.wait_state(120)
    assert scan["state"] == "finished", scan
    assert scan["lost_components"] == ["w1"]
    assert scan["redispatched"] > 0
    assert scan["lost_events"] == {}
    assert_balanced(scan)
    assert scan["ledger"]["cam"]["delivered"] == N + 2
    disturbed = crew.tree("kill")
    # Every frame reduced exactly once, pairs together: the same file as undisturbed.
    assert list(disturbed["count"]) == [1] * N
    for key in ("event", "value", "pair", "count"):
        np.testing.assert_array_equal(disturbed[key], reference[key])
    print(f"worker death detected in {detected:.2f} s; {scan['redispatched']} re-dispatched")


def test_a_worker_that_comes_back_rejoins_the_running_scan(crew: Crew) -> None:
    n = 6000
    messages = stins_series(n)
    values, _ = expected_pairs(messages)
    crew.client.arm(pairs_map(n), scan_id="rejoin")
    # The detector pauses half way until the worker is back, so the scan is still running.
    crew.feeder.send(messages[: n // 2])
    crew.client.wait_until(n // 5, 60)
    crew.kill("w2")
    wait_until(lambda: "w2" in crew.status()["scan"]["lost_components"], 3, "w2 declared dead")
    crew.start("worker", "w2")
    wait_until(lambda: "w2" in crew.status()["scan"]["rejoined"], 60, "w2 rejoined")
    crew.feeder.send(messages[n // 2 :])
    scan = crew.wait_state(120)
    assert scan["state"] == "finished", scan
    assert_balanced(scan)
    tree = crew.tree("rejoin")
    np.testing.assert_allclose(tree["value"], values)
    assert list(tree["count"]) == [1] * n
    assert (tree["pair"][1::2] > 0).all()
    status = crew.status()
    assert status["components"]["w2"]["counters"]["processed"] > 0


def test_a_killed_reducer_fails_the_scan_and_a_restarted_one_serves_the_next(crew: Crew) -> None:
    crew.client.arm(pairs_map(N), scan_id="noreducer")
    crew.feeder.send(stins_series(N))
    crew.client.wait_until(N // 4, 60)
    killed_at = time.monotonic()
    crew.kill("red")
    scan = crew.wait_state(30)
    took = time.monotonic() - killed_at
    assert scan["state"] == "failed", scan
    assert "reducer red stopped answering" in scan["failure"]
    assert took < FAIL_WITHIN, took
    assert_balanced(scan)
    crew.feeder.restart()  # drop what the source still holds of the failed scan

    crew.start("reducer", "red")
    crew.client.wait_for({"reducer": 1}, 60)
    messages = stins_series(200, seed=3)
    values, _ = expected_pairs(messages)
    crew.client.arm(pairs_map(200), scan_id="after")
    crew.feeder.send(messages)
    after = crew.wait_state(60)
    assert after["state"] == "finished", after
    np.testing.assert_allclose(crew.tree("after")["value"], values)
    print(f"reducer death: scan failed {took:.2f} s after the kill")


def test_a_killed_ingester_fails_the_scan_naming_what_was_not_received(crew: Crew) -> None:
    crew.client.arm(pairs_map(N), scan_id="noingester")
    crew.feeder.send(stins_series(N))
    crew.client.wait_until(N // 4, 60)
    killed_at = time.monotonic()
    crew.kill("ing")
    scan = crew.wait_state(30)
    took = time.monotonic() - killed_at
    assert scan["state"] == "failed", scan
    assert "ingester ing stopped answering" in scan["failure"]
    assert "cam: events" in scan["failure"]
    cam = scan["ledger"]["cam"]
    assert cam["not_received"] > 0
    assert cam["not_received_events"].endswith(str(N + 1))
    assert took < FAIL_WITHIN, took
    assert_balanced(scan)
    # The reducer wrote what it had, marked failed, with the ledger.
    with h5py.File(crew.results / "noingester_processed.h5") as f:
        group = f["tango_dranspose"]
        assert group.attrs["end_reason"] == "failed"
        assert int(group["ledger/cam"].attrs["not_received"]) == cam["not_received"]
    crew.feeder.restart()

    crew.start("ingester", "ing")
    crew.client.wait_for({"ingester": 1}, 60)
    crew.client.arm(pairs_map(100), scan_id="after")
    crew.feeder.send(stins_series(100, seed=5))
    after = crew.wait_state(60)
    assert after["state"] == "finished", after
    print(f"ingester death: scan failed {took:.2f} s after the kill")


def test_a_restarted_detector_is_seen_and_its_new_series_never_merged(crew: Crew) -> None:
    n = 400
    crew.client.arm(pairs_map(n), scan_id="restart")
    first = stins_series(n, seed=1)
    crew.feeder.send(first[:101])  # the start and 100 images, then the detector dies
    crew.client.wait_until(90, 60)
    crew.feeder.die()

    def outage() -> bool:
        scan = crew.status()["scan"]
        return "cam" in scan.get("outages", {})

    wait_until(outage, 10, "the outage is visible in the scan's status")
    crew.feeder.come_back()
    wait_until(lambda: not outage(), 10, "the detector is connected again")
    crew.feeder.send(stins_series(n, seed=2))  # a new series: start message again
    scan = crew.wait_state(60)
    assert scan["state"] == "interrupted", scan
    cam = scan["ledger"]["cam"]
    assert cam["interrupted_at"] == 101
    assert cam["delivered"] == 101
    assert "new series" in scan["last_error"]
    assert_balanced(scan)
    tree = crew.tree("restart")
    assert list(tree["event"]) == list(range(1, 101))


def test_when_no_worker_can_take_a_dead_worker_s_events_the_scan_fails_naming_them(
    crew: Crew,
) -> None:
    n = 3000
    # Every event goes to three workers at once: with one dead, its share has nowhere to go.
    tmap = {
        "cam": [
            [{"constraint": 3 * i}, {"constraint": 3 * i + 1}, {"constraint": 3 * i + 2}]
            for i in range(n)
        ]
    }
    crew.client.arm(tmap, scan_id="three-way")
    crew.feeder.send(stins_series(n))
    crew.client.wait_until(n // 5, 60)
    killed_at = time.monotonic()
    crew.kill("w1")
    scan = crew.wait_state(30)
    took = time.monotonic() - killed_at
    assert scan["state"] == "failed", scan
    assert "worker w1 stopped answering" in scan["failure"]
    assert "3 distinct constraints in one event, but only 2 worker(s)" in scan["failure"]
    assert took < FAIL_WITHIN, took
    assert_balanced(scan)
