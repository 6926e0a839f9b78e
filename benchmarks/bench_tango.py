"""What the Tango devices cost: the same pipeline with and without them, in one run.

    python -m benchmarks.bench_tango [--quick]

Two deployments of one topology run side by side on 127.0.0.1, each fed by its own STINS
source process (uint16 frames, as fast as it goes):

* runtime-only: scheduler, ingester, two workers (frame sum) and reducer as
  ``tango-dranspose serve`` processes, driven exactly as ``benchmarks.bench_runtime`` does
  (its ``deploy`` and ``run_scan``, imported);
* Tango: an embedded pytango-db, the deployment registered with dsconfig, and one device
  server process each for the controller, the ingester, two workers and the reducer, with
  the same payloads (``WorkerClass``/``PayloadPath`` properties). A scan is armed with the
  controller's ``Arm`` command (a round-robin map) and its end seen from the controller's
  ``ScanState``/``ScanId`` change events.

Measured: throughput at 1 KiB and 4 MiB (rounds alternate which deployment goes first; the
best round counts), the Tango/runtime-only ratio, and each process's CPU time per event
(steadier than rates on a shared machine); the round trip of ``Arm`` for a scan of 100,000
events (then ``Stop``); idle CPU and RSS of every server process. The exit status is 1 if a
scan failed or (without ``--quick``) a target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from benchmarks import bench_runtime
from benchmarks.bench_runtime import HERE, Service, _source, run_scan
from tango_dranspose.core.triggermap import round_robin_map
from tango_dranspose.deploy.database import TangoDb, start_pytango_db
from tango_dranspose.deploy.processes import Child, wait_until
from tango_dranspose.deploy.registration import register, servers
from tango_dranspose.deploy.servers import device_states, start_server, wait_for_devices

SIZES = [(1024, "1 KiB"), (4 * 1024 * 1024, "4 MiB")]
FULL_COUNTS = {1024: 60_000, 4 * 1024 * 1024: 1_200}
ARM_EVENTS = 100_000
FINAL = ("finished", "stopped", "aborted", "failed")
PIPELINE = "bench"
CONTROLLER = "bench/dranspose/controller"
INGESTER = "bench/dranspose/cam"
WORKERS = ("bench/dranspose/worker-1", "bench/dranspose/worker-2")
REDUCER = "bench/dranspose/reducer"
TARGET_RATIO = 0.90
TARGET_ARM_S = 1.0
TARGET_IDLE_CPU = 1.0  # percent of one core


# -- process accounting ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def deploy_runtime(source_port: int, out: Path, live: list[Service]) -> Any:
    """``bench_runtime.deploy`` as it is, with every service it starts added to ``live``
    (so that a failure half-way through still stops the ones already started)."""

    class Tracked(Service):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            live.append(self)

    original = bench_runtime.Service
    bench_runtime.Service = Tracked  # type: ignore[misc]
    try:
        return bench_runtime.deploy(source_port, out)
    finally:
        bench_runtime.Service = original  # type: ignore[misc]


# -- the Tango deployment ----------------------------------------------------------------


def deployment(source_port: int, results: Path) -> dict[str, Any]:
    """The dsconfig file of the benchmark's Tango deployment: one server per device."""
    common = {"Pipeline": [PIPELINE]}
    worker = {
        **common,
        "WorkerClass": ["payloads:FrameSumWorker"],
        "PayloadPath": [str(HERE)],
    }

    def one(cls: str, instance: str, device: str, props: dict[str, list[str]]) -> Any:
        return {instance: {cls: {device: {"properties": props}}}}

    return {
        "servers": {
            "DransposeController": one(
                "DransposeController",
                PIPELINE,
                CONTROLLER,
                # bench_runtime's scheduler runs with --window 64.
                {**common, "Window": ["64"], "ListenHost": ["127.0.0.1"]},
            ),
            "DransposeIngester": one(
                "DransposeIngester",
                PIPELINE,
                INGESTER,
                {
                    **common,
                    "Streams": ["cam"],
                    "Protocol": ["STINS"],
                    "UpstreamUrl": [f"pull+tcp://127.0.0.1:{source_port}"],
                },
            ),
            "DransposeWorker": {
                f"{PIPELINE}-{i}": {"DransposeWorker": {dev: {"properties": worker}}}
                for i, dev in enumerate(WORKERS, 1)
            },
            "DransposeReducer": one(
                "DransposeReducer",
                PIPELINE,
                REDUCER,
                {
                    **common,
                    "ReducerClass": ["payloads:LatencyReducer"],
                    "PayloadPath": [str(HERE)],
                    "ResultDir": [str(results)],
                },
            ),
        }
    }


@dataclass
class TangoSuite:
    state: Path
    db: TangoDb | None = None
    children: dict[str, Child] = field(default_factory=dict)

    def start(self, source_port: int, results: Path) -> None:
        self.db = start_pytango_db(self.state)
        config = deployment(source_port, results)
        path = self.state / "bench-deployment.json"
        path.write_text(json.dumps(config, indent=2))
        register(path, self.db.tango_host)
        started = []
        for server, instance, devices in servers(config):
            child = start_server(server, instance, self.db.tango_host, self.state / "logs")
            self.children[f"{server}/{instance}"] = child
            started.append((child, devices))
        for child, devices in started:
            wait_for_devices(self.db.tango_host, devices, child, timeout=90)

    def pids(self) -> dict[str, int]:
        out = {name: c.pid for name, c in self.children.items()}
        if self.db is not None:
            out.update({f"{c.name} (DB)": c.pid for c in self.db.children})
        return out

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop()
        self.children.clear()
        if self.db is not None:
            self.db.stop()
            self.db = None


class Controller:
    """A client of the controller device: Arm, Stop, and the end of a scan from events."""

    def __init__(self, tango_host: str) -> None:
        import tango

        self._tango = tango
        self.proxy = tango.DeviceProxy(f"tango://{tango_host}/{CONTROLLER}")
        self.proxy.set_timeout_millis(30_000)
        self.events: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self.progress_events = 0
        self._ids = [
            self.proxy.subscribe_event(name, tango.EventType.CHANGE_EVENT, self._on_event)
            for name in ("ScanState", "ScanId", "CompletedEvents")
        ]

    def _on_event(self, ev: Any) -> None:
        if ev.err:
            return
        name = ev.attr_value.name.lower()
        if name == "completedevents":  # progress, as a panel shows it: only counted
            self.progress_events += 1
            return
        self.events.put((name, ev.attr_value.value, time.perf_counter()))

    def drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def read(self, *names: str) -> list[Any]:
        return [a.value for a in self.proxy.read_attributes(list(names))]

    def wait_end(self, scan_id: str, timeout: float) -> tuple[str, float]:
        """(final state, perf_counter when it was seen) of scan ``scan_id``.

        A change event of ScanState or ScanId wakes the check; a read of both confirms it
        (a scan that ends as the previous one did pushes no ScanState change, only ScanId).
        Without events for a second, the attributes are read anyway.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                name, value, seen = self.events.get(timeout=1.0)
            except queue.Empty:
                name, value, seen = "", None, time.perf_counter()
            if name == "scanstate" and value not in FINAL:
                continue
            if name == "scanid" and value != scan_id:
                continue
            current_id, state = self.read("ScanId", "ScanState")
            if current_id == scan_id and state in FINAL:
                return str(state), seen
        raise TimeoutError(f"scan {scan_id} did not end within {timeout:.0f} s")

    def close(self) -> None:
        for eid in self._ids:
            with contextlib.suppress(self._tango.DevFailed):
                self.proxy.unsubscribe_event(eid)


def tango_scan(
    ctrl: Controller, cmd_q: Any, done_q: Any, out: Path, n: int, size: int, scan_id: str
) -> dict[str, Any]:
    """The Tango counterpart of ``bench_runtime.run_scan``: arm, send, wait, read the file."""
    request = {"map": round_robin_map(["cam"], n, 2).to_json(), "scan_id": scan_id}
    ctrl.drain()
    progress_before = ctrl.progress_events
    started = time.perf_counter()
    ctrl.proxy.Arm(json.dumps(request))
    armed = time.perf_counter()
    cmd_q.put((n, size, 0))
    state, ended = ctrl.wait_end(scan_id, 600)
    done_q.get(timeout=60)
    with h5py.File(out / f"{scan_id}_processed.h5") as f:
        lat = f["latency"][()]
    completed, total, rate = ctrl.read("CompletedEvents", "TotalEvents", "EventRate")
    return {
        "state": state,
        "completed": int(completed),
        "total": int(total),  # the map's events and its start/end wrap
        "sched_rate": float(rate),
        "arm": armed - started,
        "progress_events": ctrl.progress_events - progress_before,
        "arm_to_end": ended - started,
        "wall": time.perf_counter() - started,
        "latency": lat,
    }


# -- the measurements --------------------------------------------------------------------


@dataclass
class Run:
    deployment: str
    size: int
    events: int
    state: str
    wall: float  # Arm -> the end seen by the client (+ reading the result file)
    sched_rate: float  # completed / (end - armed), as the scheduler measures it
    p50_ms: float
    sched_elapsed: float  # armed -> end, as the scheduler measures it
    arm_s: float = float("nan")  # the Arm command's round trip (Tango only)
    cpu_us: dict[str, float] = field(default_factory=dict)  # role -> CPU µs per event
    progress_events: int = 0  # CompletedEvents change events received (Tango only)

    @property
    def rate(self) -> float:
        return self.events / self.wall


def measure_throughput(
    client: Any,
    ctrl: Controller,
    queues: dict[str, tuple[Any, Any]],
    outs: dict[str, Path],
    counts: dict[int, int],
    rounds: int,
    roles: dict[str, dict[str, int]],
    sizes: list[tuple[int, str]],
) -> list[Run]:
    """``roles``: per deployment, role -> pid of the process whose CPU time is counted."""
    runs: list[Run] = []

    def runtime(size: int, tag: str) -> Run:
        n = counts[size]
        cmd_q, done_q = queues["runtime"]
        started = time.perf_counter()
        res = run_scan(client, cmd_q, done_q, outs["runtime"], n, size, 0, f"rt{tag}")
        wall = time.perf_counter() - started
        st = res["status"]
        whole = st["completed_events"] == st["total_events"]
        return Run(
            "runtime",
            size,
            n,
            st["state"] if whole else f"{st['state']}, short",
            wall,
            st["completed_events"] / st["elapsed"],
            float(np.percentile(res["latency"], 50)) * 1e3,
            st["elapsed"],
        )

    def tango(size: int, tag: str) -> Run:
        n = counts[size]
        cmd_q, done_q = queues["tango"]
        res = tango_scan(ctrl, cmd_q, done_q, outs["tango"], n, size, f"tg{tag}")
        state = res["state"] if res["completed"] == res["total"] else f"{res['state']}, short"
        return Run(
            "tango",
            size,
            n,
            state,
            res["wall"],
            res["sched_rate"],
            float(np.percentile(res["latency"], 50)) * 1e3,
            res["completed"] / res["sched_rate"],
            res["arm"],
            progress_events=res["progress_events"],
        )

    for r in range(rounds):
        for size, label in sizes:
            order: list[tuple[str, Callable[[int, str], Run]]] = [
                ("runtime", runtime),
                ("tango", tango),
            ]
            if r % 2:
                order.reverse()
            for dep, fn in order:
                before = {role: cpu_seconds(pid) for role, pid in roles[dep].items()}
                run = fn(size, f"{size}r{r}")
                run.cpu_us = {
                    role: (cpu_seconds(pid) - before[role]) / run.events * 1e6
                    for role, pid in roles[dep].items()
                }
                runs.append(run)
                print(
                    f"round {r + 1} {label:>6} {run.deployment:<8} {run.events:>7,} events "
                    f"{run.wall:7.2f} s {run.rate:>10,.0f} events/s ({run.state}); scheduler "
                    f"armed->end {run.sched_elapsed:.3f} s, Arm {run.arm_s * 1e3:.1f} ms, "
                    f"the rest {(run.wall - run.sched_elapsed) * 1e3:.0f} ms"
                    + (
                        f"; {run.progress_events} CompletedEvents change events "
                        f"({run.progress_events / run.wall:.0f}/s)"
                        if run.deployment == "tango"
                        else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def measure_arm(client: Any, ctrl: Controller, repeats: int) -> dict[str, list[float]]:
    """Round trips of arming a scan of ARM_EVENTS events (then Stop), both deployments."""
    tmap = round_robin_map(["cam"], ARM_EVENTS, 2).to_json()
    out: dict[str, list[float]] = {"tango": [], "tango stop": [], "runtime": []}
    for i in range(repeats):
        scan_id = f"arm{i}"
        request = json.dumps({"map": tmap, "scan_id": scan_id})
        t0 = time.perf_counter()
        ctrl.proxy.Arm(request)
        out["tango"].append(time.perf_counter() - t0)
        total, state = ctrl.read("TotalEvents", "ScanState")
        if int(total) < ARM_EVENTS or state != "running":
            raise RuntimeError(f"armed {total} events, scan {state}")
        t0 = time.perf_counter()
        ctrl.proxy.Stop()
        out["tango stop"].append(time.perf_counter() - t0)
        final, _ = ctrl.wait_end(scan_id, 30)
        if final != "stopped":
            raise RuntimeError(f"the stopped scan {scan_id} ended {final}")
        wait_until(
            lambda: str(ctrl.proxy.state()) == "ON", 30, "the controller did not go back to ON"
        )
        t0 = time.perf_counter()
        client.arm(tmap, scan_id=f"rtarm{i}")
        out["runtime"].append(time.perf_counter() - t0)
        client.request("stop")
        client.wait(30)
    return out


def measure_idle(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float, float]]:
    """Per process: (CPU % of one core over ``seconds`` of idling, VmRSS MiB, VmHWM MiB)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)  # the measuring window itself, not a wait for readiness
    dt = time.monotonic() - t0
    return {
        name: (
            100.0 * (cpu_seconds(pid) - before[name]) / dt,
            memory_mib(pid, "VmRSS"),
            memory_mib(pid, "VmHWM"),
        )
        for name, pid in pids.items()
    }


# -- the report --------------------------------------------------------------------------


def report(
    runs: list[Run],
    arm: dict[str, list[float]],
    idle: dict[str, tuple[float, float, float]],
    idle_s: float,
    tango_names: set[str],
    rounds: int,
    load: tuple[float, float],
) -> tuple[list[str], list[str]]:
    """Prints the tables; returns (failures, missed targets)."""
    failures: list[str] = []
    missed: list[str] = []
    label = dict(SIZES)
    print(
        f"\nTango devices vs runtime-only on {os.cpu_count()} cores: source, "
        "scheduler/controller, ingester, 2 workers (frame sum), reducer"
    )
    print(
        f"best of {rounds} round(s), each round alternating which deployment goes first; "
        f"1-min load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
        "(a shared machine)"
    )
    print(
        f"{'frame':>6} {'deployment':<13} {'events':>7} {'Arm->end s':>10} {'events/s':>10} "
        f"{'GB/s':>7} {'sched ev/s':>11} {'p50 lat':>8}  rounds (events/s)"
    )
    for size, _ in SIZES:
        best: dict[str, Run] = {}
        if not any(r.size == size for r in runs):
            continue
        for dep in ("runtime", "tango"):
            mine = [r for r in runs if r.size == size and r.deployment == dep]
            if not mine:
                continue
            b = max(mine, key=lambda r: r.rate)
            best[dep] = b
            every = " ".join(f"{r.rate:,.0f}" for r in mine)
            bad = [r.state for r in mine if r.state != "finished"]
            print(
                f"{label[size]:>6} {dep:<13} {b.events:>7,} {b.wall:>10.2f} {b.rate:>10,.0f} "
                f"{b.rate * size / 1e9:>7.3f} {b.sched_rate:>11,.0f} {b.p50_ms:>8.1f}  {every}"
                + (f"  NOT FINISHED: {bad}" if bad else "")
            )
            if bad:
                failures.append(f"{label[size]} {dep}: {bad}")
        if len(best) == 2:
            ratio = best["tango"].rate / best["runtime"].rate
            sched = best["tango"].sched_rate / best["runtime"].sched_rate
            verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
            if ratio < TARGET_RATIO:
                missed.append(f"{label[size]} throughput ratio {ratio:.1%}")
            print(
                f"{label[size]:>6} {'tango/runtime':<13} {'':>7} {'':>10} {ratio:>10.1%} "
                f"{'':>7} {sched:>11.1%} {'':>8}  target >= {TARGET_RATIO:.0%}: {verdict}"
            )
    print(
        "Arm->end: from the client's arm call to the end it sees (runtime-only: "
        "ControlClient.arm ... wait; Tango: the Arm command ... the ScanState/ScanId change "
        "event), the result file read included; events/s = events / that. sched ev/s: "
        "completed / (armed -> end) as the scheduler measures it (bench_runtime's number; "
        "the controller's EventRate after the scan). p50 lat: ms from the source's send to "
        "the reducer, at full rate (mostly queueing)."
    )
    print("\nCPU per event in the throughput scans (µs, user+system, the least over the rounds)")
    roles = list(runs[0].cpu_us) if runs else []
    print(f"{'frame':>6} {'deployment':<13} " + " ".join(f"{r:>10}" for r in roles))
    for size, _ in SIZES:
        for dep in ("runtime", "tango"):
            mine = [r for r in runs if r.size == size and r.deployment == dep]
            if mine:
                cells = [min(r.cpu_us[role] for r in mine) for role in roles]
                print(f"{label[size]:>6} {dep:<13} " + " ".join(f"{c:>10,.1f}" for c in cells))
    if arm["tango"]:
        worst = max(arm["tango"])
        verdict = "ok" if worst < TARGET_ARM_S else "MISSED"
        if worst >= TARGET_ARM_S:
            missed.append(f"Arm took {worst:.3f} s")
        print(
            f"\nArm of a {ARM_EVENTS:,}-event round-robin scan (compact sequence map), s per "
            f"try: Tango Arm command {' '.join(f'{t:.3f}' for t in arm['tango'])} "
            f"(target < {TARGET_ARM_S:.0f} s: {verdict}); then Stop "
            f"{' '.join(f'{t:.3f}' for t in arm['tango stop'])}, ended 'stopped'; "
            f"runtime-only arm {' '.join(f'{t:.3f}' for t in arm['runtime'])}"
        )
    print(f"\nidle for {idle_s:.0f} s after the scans (CPU % of one core; RSS MiB)")
    print(f"{'process':<32} {'idle CPU %':>10} {'RSS':>7} {'peak RSS':>9}")
    for name, (cpu, rss, hwm) in idle.items():
        mark = ""
        if name in tango_names:
            mark = "  ok" if cpu < TARGET_IDLE_CPU else "  MISSED (target < 1%)"
            if cpu >= TARGET_IDLE_CPU:
                missed.append(f"{name} idles at {cpu:.2f}% CPU")
        print(f"{name:<32} {cpu:>10.2f} {rss:>7.0f} {hwm:>9.0f}{mark}")
    return failures, missed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run (under a minute)")
    ap.add_argument("--rounds", type=int, help="throughput rounds (default 3, quick 1)")
    ap.add_argument("--idle", type=float, help="seconds of the idle-CPU window (default 10)")
    ap.add_argument("--arm-repeats", type=int, help="Arm round trips to time (default 3)")
    ap.add_argument(
        "--size",
        action="append",
        choices=[lab.replace(" ", "") for _, lab in SIZES],
        help="only this frame size (repeatable; default all)",
    )
    ap.add_argument("--keep", metavar="DIR", help="keep the Tango DB, logs and results here")
    args = ap.parse_args(argv)
    counts = dict(FULL_COUNTS)
    rounds, idle_s, arm_repeats = 3, 10.0, 3
    if args.quick:
        counts = {k: max(v // 20, 40) for k, v in counts.items()}
        rounds, idle_s, arm_repeats = 1, 3.0, 1
    rounds = args.rounds or rounds
    idle_s = args.idle or idle_s
    arm_repeats = args.arm_repeats or arm_repeats
    sizes = [(b, lab) for b, lab in SIZES if not args.size or lab.replace(" ", "") in args.size]

    # The sources fork before this process touches Tango (no omniORB threads to inherit).
    queues: dict[str, tuple[Any, Any]] = {}
    ports: dict[str, int] = {}
    sources: list[mp.Process] = []
    for dep in ("runtime", "tango"):
        port_q: Any = mp.Queue()
        cmd_q: Any = mp.Queue()
        done_q: Any = mp.Queue()
        proc = mp.Process(target=_source, args=(port_q, cmd_q, done_q), daemon=True)
        proc.start()
        sources.append(proc)
        ports[dep] = port_q.get(timeout=30)
        queues[dep] = (cmd_q, done_q)

    # SIGTERM ends the run like Ctrl-C does: through the finally that stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = os.getloadavg()[0]
    live: list[Service] = []
    suite: TangoSuite | None = None
    ctrl: Controller | None = None
    failures: list[str] = ["the run did not finish"]
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-tango-") as tmp:
        root = Path(args.keep).resolve() if args.keep else Path(tmp)
        outs = {"runtime": root / "runtime-results", "tango": root / "tango-results"}
        for d in outs.values():
            d.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.monotonic()
            svc, client = deploy_runtime(ports["runtime"], outs["runtime"], live)
            t1 = time.monotonic()
            suite = TangoSuite(root / "tango")
            suite.start(ports["tango"], outs["tango"])
            assert suite.db is not None
            t2 = time.monotonic()
            print(
                f"runtime-only up in {t1 - t0:.1f} s; Tango (DB, dsconfig, 5 servers) up in "
                f"{t2 - t1:.1f} s at TANGO_HOST={suite.db.tango_host}",
                file=sys.stderr,
                flush=True,
            )
            ctrl = Controller(suite.db.tango_host)
            wait_until(
                lambda: str(ctrl.proxy.state()) == "ON" and len(ctrl.read("Workers")[0]) == 2,
                60,
                "the Tango controller did not see its pipeline",
            )
            roles = {
                "runtime": {
                    "sched/ctrl": svc["scheduler"].popen.pid,
                    "ingester": svc["ingester"].popen.pid,
                    "worker 1": svc["w0"].popen.pid,
                    "worker 2": svc["w1"].popen.pid,
                    "reducer": svc["reducer"].popen.pid,
                },
                "tango": {
                    "sched/ctrl": suite.children[f"DransposeController/{PIPELINE}"].pid,
                    "ingester": suite.children[f"DransposeIngester/{PIPELINE}"].pid,
                    "worker 1": suite.children[f"DransposeWorker/{PIPELINE}-1"].pid,
                    "worker 2": suite.children[f"DransposeWorker/{PIPELINE}-2"].pid,
                    "reducer": suite.children[f"DransposeReducer/{PIPELINE}"].pid,
                },
            }
            runs = measure_throughput(client, ctrl, queues, outs, counts, rounds, roles, sizes)
            arm = measure_arm(client, ctrl, arm_repeats)
            host = suite.db.tango_host
            devices = [CONTROLLER, INGESTER, *WORKERS, REDUCER]
            wait_until(
                lambda: set(device_states(host, devices).values()) == {"ON"},
                30,
                "the Tango devices did not all go back to ON",
            )
            pids = {f"tango {k}": v for k, v in suite.pids().items()}
            pids.update({f"runtime {k}": s.popen.pid for k, s in svc.items()})
            idle = measure_idle(pids, idle_s)
            failures, missed = report(
                runs,
                arm,
                idle,
                idle_s,
                {f"tango {k}" for k in suite.children},
                rounds,
                (load_start, os.getloadavg()[0]),
            )
        finally:
            if ctrl is not None:
                ctrl.close()
            if suite is not None:
                suite.stop()
            for s in live:
                s.stop()
            for cmd_q, _ in queues.values():
                cmd_q.put(None)
            for proc in sources:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
    if failures:
        print(f"\nFAILED: {'; '.join(failures)}")
        return 1
    if args.quick:
        print(
            "\na smoke run: its scans last a fraction of a second, so fixed per-scan costs "
            "dominate the ratios; run without --quick to measure"
            + (f" (missed here: {'; '.join(missed)})" if missed else "")
        )
        return 0
    print(f"\ntargets: {'all met' if not missed else 'MISSED: ' + '; '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
