"""GUI tier: the TaurusGui of a running pipeline, offscreen, with pytest-qt.

A real Tango DB (pytango-db; Taurus cannot read attributes of a device without a DB), the
demo deployment (``tango-db/demo.json``) registered with dsconfig, its servers as processes,
and a simulated STINS camera, as ``tango-dranspose demo`` runs them. The tests skip, saying
so, only when PyQt5, Taurus or pytest-qt cannot be imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango

from tango_dranspose.deploy.database import _bin, start_pytango_db
from tango_dranspose.deploy.demo import CONTROLLER, INGESTER, REDUCER, REPO_CONFIG
from tango_dranspose.deploy.processes import Child, wait_until
from tango_dranspose.deploy.registration import load_config
from tests.system.conftest import Suite

# Before a QApplication exists (pytest-qt's qapp fixture creates it) and before Taurus picks
# its Qt binding.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("QT_API", "pyqt5")

PIPELINE = "demo"
FRAMES = 300  # per scan, one every 5 ms: a scan lasts about 1.5 s

try:
    from taurus.qt.qtgui.application import TaurusApplication

    GUI_MISSING = ""
except ImportError as exc:  # pragma: no cover - the gui extra is not installed
    GUI_MISSING = f"the GUI needs PyQt5 and Taurus (pip install -e '.[gui]'): {exc}"

if not GUI_MISSING:

    @pytest.fixture(scope="session")
    def qapp_cls() -> Any:
        """pytest-qt's QApplication is a TaurusApplication (without its option parsing)."""

        class App(TaurusApplication):  # type: ignore[misc]
            def __init__(self, args: list[str]) -> None:
                super().__init__(args, cmd_line_parser=None)

        return App


@dataclass
class Running:
    tango_host: str
    suite: Suite

    def proxy(self, device: str) -> tango.DeviceProxy:
        return self.suite.proxy(device)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TANGO_DRANSPOSE_ARTIFACTS, or a pytest temporary directory."""
    env = os.environ.get("TANGO_DRANSPOSE_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def demo_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if GUI_MISSING:
        pytest.skip(GUI_MISSING)
    state = tmp_path_factory.mktemp("gui-demo")
    db = start_pytango_db(state)
    camera = Child(
        "camera simulator",
        [
            _bin("tango-dranspose"), "simulate", "stins", "-n", str(FRAMES), "--shape", "32x32",
            "--interval", "0.005", "--repeat", "100",
        ],
        state / "logs" / "camera.log",
    )  # fmt: skip
    suite: Suite | None = None
    try:
        url = camera.wait_for_line(r"^listening (\S+)", 30).group(1)
        config = load_config(REPO_CONFIG)
        servers = config["servers"]
        ingester = servers["DransposeIngester"]["demo"]["DransposeIngester"][INGESTER]
        ingester["properties"]["UpstreamUrl"] = [f"pull+{url}"]
        reducer = servers["DransposeReducer"]["demo"]["DransposeReducer"][REDUCER]
        reducer["properties"]["ResultDir"] = [str(state / "results")]
        suite = Suite(db, config, state)
        suite.start()
        ctrl = suite.proxy(CONTROLLER)
        wait_until(lambda: str(ctrl.state()) == "ON", 60, f"controller not ON: {ctrl.status()}")
        yield Running(db.tango_host, suite)
    finally:
        if suite is not None:
            suite.stop()
        camera.stop()
        db.stop()
