"""``tango-dranspose demo``: the whole Tango suite on this machine, one scan, the result.

An embedded Tango DB (pytango-db, sqlite in the state directory), the demo deployment of
``tango-db/demo.json`` registered with dsconfig, every device server as its own process, a
simulated STINS camera, a scan armed through the controller device with a live progress bar
(from change events), the reduced result, and a clean shutdown: at the end, or with ``--keep``
on Ctrl-C, SIGTERM or SIGHUP (the terminal closed). A demo killed outright takes its children
along too (``processes``: they die with their parent).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tango_dranspose.deploy.database import TangoDb, _bin, start_pytango_db
from tango_dranspose.deploy.processes import Child, StartupError, stop_all, wait_until
from tango_dranspose.deploy.registration import load_config, register, servers
from tango_dranspose.deploy.servers import start_server, wait_for_devices

REPO_CONFIG = Path(__file__).resolve().parents[2] / "tango-db" / "demo.json"
CONTROLLER = "demo/dranspose/controller"
INGESTER = "demo/dranspose/camera"
REDUCER = "demo/dranspose/reducer"
FINAL = ("finished", "stopped", "aborted", "failed")


@dataclass
class Demo:
    state_dir: Path
    frames: int = 200
    interval: float = 0.005
    config: Path = REPO_CONFIG
    db: TangoDb | None = None
    children: list[Child] = field(default_factory=list)

    def say(self, text: str) -> None:
        # The terminal may be gone (SIGHUP): shutting down matters more than saying so.
        with contextlib.suppress(OSError):
            print(f"demo: {text}", flush=True)

    # -- bring-up --------------------------------------------------------------------------

    def start(self) -> None:
        logs = self.state_dir / "logs"
        t0 = time.monotonic()
        self.db = start_pytango_db(self.state_dir)
        self.say(
            f"Tango DB (pytango-db, sqlite {self.state_dir / 'tango.sqlite'}) at "
            f"TANGO_HOST={self.db.tango_host}"
        )
        camera = Child(
            "camera simulator",
            [
                _bin("tango-dranspose"),
                "simulate",
                "stins",
                "-n",
                str(self.frames),
                "--shape",
                "64x64",
                "--interval",
                str(self.interval),
                "--repeat",
                "1000",
                "--per-connection",  # every scan armed later (--keep) gets a whole sequence
            ],
            logs / "camera.log",
        )
        self.children.append(camera)
        url = camera.wait_for_line(r"^listening (\S+)", 30).group(1)
        self.say(f"simulated STINS camera ({self.frames} frames of 64x64 per scan) at {url}")
        config = load_config(self.config)
        ing = config["servers"]["DransposeIngester"]["demo"]["DransposeIngester"][INGESTER]
        ing["properties"]["UpstreamUrl"] = [_pull(url)]
        reducer = config["servers"]["DransposeReducer"]["demo"]["DransposeReducer"][REDUCER]
        reducer["properties"]["ResultDir"] = [str(self.state_dir / "results")]
        deployed = self.state_dir / "demo-deployment.json"
        deployed.write_text(json.dumps(config, indent=2))
        result = register(deployed, self.db.tango_host)
        self.say(f"registered {self.config.name} (camera at {url}) with dsconfig")
        if not result.changed:
            self.say("(the Tango DB already had this configuration)")
        started = []
        for server, instance, devices in servers(config):
            child = start_server(server, instance, self.db.tango_host, logs)
            self.children.append(child)
            started.append((child, devices))
        for child, devices in started:
            states = wait_for_devices(self.db.tango_host, devices, child, timeout=60)
            faulty = [d for d, state in states.items() if state == "FAULT"]
            if faulty:
                raise StartupError(
                    f"{', '.join(faulty)} in FAULT; see {child.log} (misconfigured properties?)"
                )
            self.say(f"started {child.name} ({', '.join(devices)})")
        self.say(f"pipeline up in {time.monotonic() - t0:.1f} s; logs in {logs}")

    def stop(self) -> None:
        # The servers and the camera stop together (each server unexports), then the DB.
        stop_all(reversed(self.children))
        self.children.clear()
        if self.db is not None:
            self.db.stop()
            self.db = None

    # -- the scan --------------------------------------------------------------------------

    def scan(self) -> int:
        import tango

        from tango_dranspose.core.triggermap import round_robin_map

        assert self.db is not None
        host = self.db.tango_host
        ctrl = tango.DeviceProxy(f"tango://{host}/{CONTROLLER}")
        ctrl.set_timeout_millis(30_000)
        wait_until(
            lambda: str(ctrl.state()) == "ON",
            30,
            f"the controller did not become ready ({ctrl.status()})",
        )
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def on_event(ev: Any) -> None:
            if not ev.err:
                events.put((ev.attr_value.name, ev.attr_value.value))

        ids = [
            ctrl.subscribe_event(name, tango.EventType.CHANGE_EVENT, on_event)
            for name in ("CompletedEvents", "ScanState")
        ]
        request = {
            "map": round_robin_map(["camera"], self.frames, 2).to_json(),
            "title": "demo: ROI intensity of a simulated diffraction scan",
            "parameters": {"roi": "[20, 44, 20, 44]"},
        }
        self.say("arming a scan through the controller device (Arm command)")
        scan_id = ctrl.Arm(json.dumps(request))
        total = int(ctrl.TotalEvents)
        done, state = 0, "running"
        deadline = time.monotonic() + 120
        while state not in FINAL and time.monotonic() < deadline:
            try:
                name, value = events.get(timeout=1.0)
            except queue.Empty:
                continue
            before = done
            if name.lower() == "completedevents":
                done = int(value)
            elif name.lower() == "scanstate":
                state = str(value)
            if done != before:
                _bar(scan_id, done, total)
        _bar(scan_id, int(ctrl.CompletedEvents), total)
        print(file=sys.stderr)
        for eid in ids:
            ctrl.unsubscribe_event(eid)
        state = str(ctrl.ScanState)
        self.say(f"scan {scan_id} {state}; controller: {ctrl.status()}")
        for line in ctrl.Ledger:
            self.say(f"  ledger {line}")
        self._show_result(host, str(ctrl.ResultFile))
        return 0 if state == "finished" and str(ctrl.state()) == "ON" else 1

    def _show_result(self, host: str, path: str) -> None:
        import h5py
        import numpy as np
        import tango

        from tango_dranspose.core.h5tree import read_tree
        from tango_dranspose.core.treeview import describe_tree

        red = tango.DeviceProxy(f"tango://{host}/{REDUCER}")
        # The reducer's attributes are final once it reports the file it wrote.
        wait_until(lambda: str(red.ResultFile) == path, 10, "the reducer did not report its file")
        results = list(red.Results or [])
        self.say(f"reducer attributes of the published values ({len(results)}):")
        for entry in results:
            if " -> " not in entry:
                self.say(f"  {entry}")
                continue
            path_, rest = entry.split(" -> ")
            attr = rest.split(" ")[0]
            value = red.read_attribute(attr).value
            if isinstance(value, np.ndarray):
                value = f"{value.dtype} array {value.shape}"
            self.say(f"  {REDUCER}/{attr} = {value}   ({path_})")
        if path:
            self.say(f"result file: {path}")
            with h5py.File(path, "r") as f:
                print(describe_tree(read_tree(f)))


def _pull(url: str) -> str:
    # The simulator prints tcp://host:port for a PUSH socket; the ingester pulls from it.
    return url if "+" in url.split("://", 1)[0] else f"pull+{url}"


def _bar(scan_id: str, done: int, total: int) -> None:
    pct = 100.0 * done / total if total else 0.0
    bar = "#" * int(pct / 5)
    print(
        f"\rscan {scan_id} [{bar:<20}] {done}/{total} events", end="", file=sys.stderr, flush=True
    )


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: the demo shuts down as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def run_demo(state_dir: Path | None, frames: int, keep: bool, config: Path | None = None) -> int:
    # Python's default for SIGTERM and SIGHUP ends the process at once: no finally, no atexit,
    # and the children (in their own sessions, so the terminal's signals miss them) would run
    # on. Raised as an exception instead, they stop everything as Ctrl-C does.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stopped) for sig in STOP_SIGNALS} if main else {}
    try:
        return _run(state_dir, frames, keep, config)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(state_dir: Path | None, frames: int, keep: bool, config: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="tango-dranspose-demo-") as tmp:
        demo = Demo(Path(state_dir or tmp).resolve(), frames=frames, config=config or REPO_CONFIG)
        try:
            demo.start()
            status = demo.scan()
            if keep:
                assert demo.db is not None
                demo.say(
                    f"running; point Taurus or itango at it: export TANGO_HOST={demo.db.tango_host}"
                    f"  (e.g. taurus device {CONTROLLER}). Ctrl-C or SIGTERM stops everything."
                )
                while True:
                    time.sleep(3600)
            return status
        except StartupError as exc:
            print(f"demo: could not start: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                print(file=sys.stderr)
            demo.say("interrupted")
            return 130
        except Stopped as exc:
            demo.say(f"stopped by {exc}")
            return 128 + exc.signum
        finally:
            # A repeated SIGTERM or SIGHUP must not cut the shutdown short (it is bounded:
            # SIGKILL after 10 s); a second Ctrl-C still does, and atexit SIGKILLs the rest.
            if threading.current_thread() is threading.main_thread():
                for sig in STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
            demo.say("shutting down")
            demo.stop()
