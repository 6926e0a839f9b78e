"""A real Sardana for tests: the project's sardana-config YAML loaded into a Tango DB, Pool and
MacroServer as processes, and a plain PyTango Door client (no Taurus, no spock)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tango
from ruamel.yaml import YAML

from tango_dranspose.deploy.database import _bin
from tango_dranspose.deploy.processes import Child, StartupError, wait_until

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "sardana-config" / "dranspose-test.yaml"
MACRO_PATH = REPO / "tango_dranspose" / "sardana" / "macros"
RECORDER_PATH = REPO / "tango_dranspose" / "sardana" / "recorders"
POOL = "pool/dranspose/1"
MACROSERVER = "macroserver/dranspose/1"
DOOR = "door/dranspose/1"


def write_config(
    path: Path,
    tango_host: str,
    state: Path,
    environment: dict[str, Any] | None = None,
    reduced: str = "",
) -> Path:
    """A copy of the project's YAML for this DB, with its own MacroServer environment file;
    ``reduced`` is the reducer attribute the channel reduced01 reads (device/attribute)."""
    yaml = YAML()
    conf = yaml.load(CONFIG.read_text())
    conf["tango_host"] = tango_host
    if reduced:
        ctrl = conf["pools"]["dranspose"]["controllers"]["reducedctrl01"]
        attrs = ctrl["elements"]["reduced01"]["attributes"]
        attrs["TaurusAttribute"] = f"tango://{tango_host}/{reduced}"
    ms = conf["macro_servers"]["dranspose"]
    ms["macro_path"] = [str(MACRO_PATH)]
    ms["recorder_path"] = [str(RECORDER_PATH)]
    # A fresh environment file per run: a stale one keeps the last run's general hooks.
    ms["environment_db"] = str(state / "env" / "macroserver.properties")
    variables = ms["environment"]["variables"]
    variables["ScanDir"] = str(state / "scans")
    variables.update(environment or {})
    with path.open("w") as f:
        yaml.dump(conf, f)
    return path


@dataclass
class Sardana:
    tango_host: str
    state: Path
    children: list[Child] = field(default_factory=list)

    def proxy(self, name: str, timeout_ms: int = 10_000) -> tango.DeviceProxy:
        p = tango.DeviceProxy(f"tango://{self.tango_host}/{name}")
        p.set_timeout_millis(timeout_ms)
        return p

    def load(self, environment: dict[str, Any] | None = None, reduced: str = "") -> None:
        config = write_config(
            self.state / "sardana.yaml", self.tango_host, self.state, environment, reduced
        )
        (self.state / "scans").mkdir(parents=True, exist_ok=True)
        (self.state / "env").mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [_bin("sardana-config"), "load", "--write", "--environment", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**_env(), "TANGO_HOST": self.tango_host},
        )
        if out.returncode != 0:
            raise StartupError(f"sardana-config load failed:\n{(out.stdout + out.stderr)[-3000:]}")

    def _server(self, name: str, instance: str) -> Child:
        child = Child(
            f"{name}/{instance}",
            [
                _bin(name),
                instance,
                "-ORBendPoint",
                "giop:tcp:127.0.0.1:0",
                "--without-log-file=True",
            ],
            self.state / "logs" / f"{name}-{instance}.log",
            env={"TANGO_HOST": self.tango_host},
        )
        self.children.append(child)
        return child

    def start_pool(self) -> Child:
        return self._server("Pool", "dranspose")

    def wait_pool(self, child: Child, timeout: float = 60) -> None:
        wait_until(lambda: _answers(self, POOL), timeout, "the Pool did not answer", child, 0.3)

    def start_macroserver(self, timeout: float = 90) -> None:
        child = self._server("MacroServer", "dranspose")

        def ready() -> bool:
            # The door answers before the macros are loaded: ask for them too.
            if not _answers(self, DOOR):
                return False
            try:
                macros = self.proxy(MACROSERVER).read_attribute("MacroList").value or ()
            except tango.DevFailed:
                return False
            return "dranspose_pre_scan" in macros or "ascan" in macros

        wait_until(ready, timeout, "the MacroServer did not answer", child, 0.3)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _answers(sardana: Sardana, device: str) -> bool:
    try:
        sardana.proxy(device, 3000).state()
    except tango.DevFailed:
        return False
    return True


@dataclass
class MacroRun:
    state: str  # the door's state at the end: ON (done), ALARM (the macro failed)
    output: list[str]
    errors: list[str]
    warnings: list[str]
    seconds: float

    @property
    def text(self) -> str:
        return "\n".join(self.output + self.warnings + self.errors)


class DoorClient:
    """Runs macros on a Door and collects what they print, through change events."""

    STREAMS = ("Output", "Info", "Warning", "Error")

    def __init__(self, sardana: Sardana) -> None:
        self.door = sardana.proxy(DOOR, 30_000)
        self._lock = threading.Lock()
        self._lines: dict[str, list[str]] = {s: [] for s in self.STREAMS}
        self._ids: list[int] = []
        self._started = time.monotonic()
        self._macro = ""
        for name in self.STREAMS:
            first = [True]

            def push(ev: Any, name: str = name, first: list[bool] = first) -> None:
                if first[0]:  # the first event is the previous macro's value
                    first[0] = False
                    return
                if ev.err or ev.attr_value is None or ev.attr_value.value is None:
                    return
                with self._lock:
                    self._lines[name].extend(str(v) for v in ev.attr_value.value)

            self._ids.append(self.door.subscribe_event(name, tango.EventType.CHANGE_EVENT, push))

    def run(self, *macro: str, timeout: float = 60.0) -> MacroRun:
        self.start(*macro)
        return self.wait(timeout)

    def start(self, *macro: str) -> None:
        """Start a macro and return at once (``wait`` collects what it printed)."""
        with self._lock:
            for lines in self._lines.values():
                lines.clear()
        self._started = time.monotonic()
        self._macro = " ".join(macro)
        self.door.RunMacro(list(macro))

    def wait(self, timeout: float = 60.0) -> MacroRun:
        """Until the door leaves RUNNING (RunMacro returns at once), then what was printed."""
        t0 = self._started
        deadline = time.monotonic() + timeout
        time.sleep(0.05)
        while str(self.door.state()) in ("RUNNING", "STANDBY"):
            if time.monotonic() > deadline:
                self.door.AbortMacro()
                raise TimeoutError(f"{self._macro}: still running after {timeout} s")
            time.sleep(0.05)
        time.sleep(0.2)  # the last output events
        with self._lock:
            lines = {k: list(v) for k, v in self._lines.items()}
        return MacroRun(
            str(self.door.state()),
            lines["Output"] + lines["Info"],
            lines["Error"],
            lines["Warning"],
            time.monotonic() - t0,
        )

    def must(self, *macro: str, timeout: float = 60.0) -> MacroRun:
        run = self.run(*macro, timeout=timeout)
        if run.state != "ON":
            raise AssertionError(f"{' '.join(macro)} ended in {run.state}:\n{run.text}")
        return run

    def close(self) -> None:
        for sub in self._ids:
            with contextlib.suppress(tango.DevFailed):
                self.door.unsubscribe_event(sub)


__all__ = ["DOOR", "MACROSERVER", "POOL", "DoorClient", "MacroRun", "Sardana"]
