"""The pipeline GUI on a running demo pipeline: built from the Tango DB, live values, a scan
followed on screen, the screenshot command, and the command's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PyQt5.QtWidgets", reason="the GUI tests need PyQt5 (the gui extra)")
pytest.importorskip("taurus", reason="the GUI tests need Taurus (the gui extra)")
pytest.importorskip("taurus_pyqtgraph", reason="the GUI tests need taurus_pyqtgraph (gui extra)")
pytest.importorskip("pytestqt", reason="the GUI tests need pytest-qt")

import tango
from taurus.external.qt import Qt

from tango_dranspose.cli import main
from tango_dranspose.core.triggermap import round_robin_map
from tango_dranspose.deploy.database import _bin, free_port
from tango_dranspose.deploy.demo import CONTROLLER, INGESTER, REDUCER
from tango_dranspose.gui import app
from tango_dranspose.gui.widgets import (
    OverviewPanel,
    ParametersPanel,
    ResultsPanel,
    ServicesPanel,
)
from tests.gui.conftest import FRAMES, PIPELINE, Running

WORKERS = ["demo/dranspose/worker-1", "demo/dranspose/worker-2"]
LIVE_MS = 20_000


@pytest.fixture
def gui(
    qtbot: Any, demo_pipeline: Running, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Any]:
    monkeypatch.setenv("TANGO_HOST", demo_pipeline.tango_host)
    monkeypatch.setenv("TANGO_DRANSPOSE_PIPELINE", PIPELINE)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def critical(parent: Any, title: str, text: str, *args: Any) -> Any:
        raise AssertionError(f"TaurusGui error dialog: {title}: {text}")

    # A modal dialog would wait forever offscreen.
    monkeypatch.setattr(Qt.QMessageBox, "critical", staticmethod(critical))
    monkeypatch.setattr(
        Qt.QMessageBox, "question", staticmethod(lambda *a, **k: Qt.QMessageBox.Yes)
    )
    window = app.build(headless=True)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    yield window


def panel(gui: Any, name: str) -> Any:
    return gui.getPanel(name).widget()


def number(text: str) -> int:
    return int(text.split()[0]) if text.split() and text.split()[0].isdigit() else -1


def test_the_gui_is_built_from_the_tango_db(qtbot: Any, gui: Any, demo_pipeline: Running) -> None:
    assert set(app.PANELS) <= set(gui.getPanelNames())
    overview = panel(gui, "Overview")
    assert isinstance(overview, OverviewPanel)
    assert overview.model.endswith(CONTROLLER)
    services = panel(gui, "Services")
    assert isinstance(services, ServicesPanel)
    assert sorted(n.split("/", 3)[-1] for n in services.cells) == sorted(
        [INGESTER, *WORKERS, REDUCER]
    )
    assert "ProcessedEvents" in services.cells[f"tango://{demo_pipeline.tango_host}/{WORKERS[0]}"]
    qtbot.waitUntil(lambda: not app.pending(gui), timeout=LIVE_MS)
    # Live values, not placeholders.
    assert overview.labels["State"].text() in ("ON", "ALARM", "RUNNING")
    assert "ready" in overview.labels["Status"].text().lower() or overview.labels[
        "Status"
    ].text().startswith("Scan")
    params = panel(gui, "Parameters")
    assert isinstance(params, ParametersPanel)
    attrs = [a.lower() for a in demo_pipeline.proxy(CONTROLLER).get_attribute_list()]
    if "parameters" in attrs:  # the controller lists its parameters: a writable form
        assert params.form is not None or params.names == []
    else:
        assert "no parameters" in params.note.text().lower()
    assert isinstance(panel(gui, "Results"), ResultsPanel)


def test_a_scan_armed_elsewhere_shows_up_live(
    qtbot: Any, gui: Any, demo_pipeline: Running, artifacts: Path
) -> None:
    overview: OverviewPanel = panel(gui, "Overview")
    services: ServicesPanel = panel(gui, "Services")
    results: ResultsPanel = panel(gui, "Results")
    qtbot.waitUntil(lambda: not app.pending(gui), timeout=LIVE_MS)
    worker = services.cells[f"tango://{demo_pipeline.tango_host}/{WORKERS[0]}"]
    before = number(worker["ProcessedEvents"].text())

    ctrl = demo_pipeline.proxy(CONTROLLER)
    request = {
        "map": round_robin_map(["camera"], FRAMES, 2).to_json(),
        "title": "gui test",
        "parameters": {"roi": "[8, 24, 8, 24]"},
    }
    scan_id = str(ctrl.Arm(json.dumps(request)))
    total = FRAMES + 2

    qtbot.waitUntil(lambda: overview.labels["ScanId"].text() == scan_id, timeout=LIVE_MS)
    qtbot.waitUntil(lambda: number(worker["ProcessedEvents"].text()) > before, timeout=LIVE_MS)
    assert overview.progress is not None
    qtbot.waitUntil(
        lambda: overview.progress.format().startswith(f"{total} / {total} events"),
        timeout=LIVE_MS,
    )
    qtbot.waitUntil(lambda: overview.labels["ScanState"].text() == "finished", timeout=LIVE_MS)
    # The reducer's published values, as plots with data: ROI curves and the summed image.
    qtbot.waitUntil(lambda: len(results.views) >= 5 and not results.pending(), timeout=LIVE_MS)
    kinds = {p.path: p.kind for p in results.views}
    assert kinds["roi/intensity"] == "spectrum"
    assert kinds["sum_image"] == "image"
    assert kinds["frames"] == "scalar"
    ledger = panel(gui, "Ledger")
    qtbot.waitUntil(lambda: f"delivered {total}" in ledger.toPlainText(), timeout=LIVE_MS)

    shot = artifacts / "gui-after-scan.png"
    app.process_events_for(0.5)
    assert gui.grab().save(str(shot))
    assert shot.stat().st_size > 10_000


def test_the_stop_button_ends_a_scan(qtbot: Any, gui: Any, demo_pipeline: Running) -> None:
    overview: OverviewPanel = panel(gui, "Overview")
    qtbot.waitUntil(lambda: not app.pending(gui), timeout=LIVE_MS)
    ctrl = demo_pipeline.proxy(CONTROLLER)
    # More events than the camera sends: the scan runs until stopped.
    scan_id = str(ctrl.Arm(json.dumps(round_robin_map(["camera"], 10 * FRAMES, 2).to_json())))
    qtbot.waitUntil(lambda: overview.labels["ScanId"].text() == scan_id, timeout=LIVE_MS)
    qtbot.waitUntil(lambda: overview.labels["ScanState"].text() == "running", timeout=LIVE_MS)
    stop = next(b for b in overview.findChildren(Qt.QPushButton) if b.text() == "Stop")
    qtbot.mouseClick(stop, Qt.Qt.LeftButton)
    qtbot.waitUntil(lambda: overview.labels["ScanState"].text() == "stopped", timeout=LIVE_MS)
    assert str(ctrl.ScanState) == "stopped"


def test_the_parameters_form_follows_the_parameters_list(
    qtbot: Any, demo_pipeline: Running
) -> None:
    controller = f"tango://{demo_pipeline.tango_host}/{CONTROLLER}"
    params = ParametersPanel()
    qtbot.addWidget(params)
    params.setModel(controller)
    # What the controller's Parameters attribute lists: one writable row per name.
    params.show_parameters(["roi", "threshold"])
    assert params.form is not None
    assert [str(m) for m in params.form.getModel()] == [
        f"{controller}/param_roi",
        f"{controller}/param_threshold",
    ]
    assert params.note.isHidden()
    params.show_parameters([])
    assert params.form is None
    assert params.note.text() == "No parameters."


def test_a_parameter_written_in_the_form_reaches_the_controller(
    qtbot: Any, gui: Any, demo_pipeline: Running
) -> None:
    ctrl = demo_pipeline.proxy(CONTROLLER)
    if "parameters" not in [a.lower() for a in ctrl.get_attribute_list()]:
        pytest.skip("this controller has no Parameters attribute")
    params: ParametersPanel = panel(gui, "Parameters")
    # The ROI worker describes roi and threshold; the controller lists them once it runs.
    qtbot.waitUntil(lambda: params.form is not None, timeout=LIVE_MS)
    assert params.names == ["roi", "threshold"]
    item = next(i for i in params.form.getItems() if i.getModelName().endswith("param_threshold"))
    qtbot.waitUntil(lambda: item.writeWidget() is not None, timeout=LIVE_MS)
    editor = item.writeWidget()
    try:
        editor.clear()
        qtbot.keyClicks(editor, "1234.5")
        apply = next(b for b in params.form.findChildren(Qt.QPushButton) if b.text() == "Apply")
        qtbot.mouseClick(apply, Qt.Qt.LeftButton)
        qtbot.waitUntil(lambda: ctrl.param_threshold == pytest.approx(1234.5), timeout=LIVE_MS)
    finally:
        ctrl.param_threshold = 0.0  # the other tests' scans use the whole frame


@pytest.fixture
def absent_worker(demo_pipeline: Running) -> Iterator[str]:
    """A worker registered for the pipeline but not running (as after a crash)."""
    db = tango.Database(*demo_pipeline.tango_host.split(":"))
    info = tango.DbDevInfo()
    info.name, info._class, info.server = (
        "demo/dranspose/worker-absent",
        "DransposeWorker",
        "DransposeWorker/gui-test-absent",
    )
    db.add_device(info)
    db.put_device_property(info.name, {"Pipeline": [PIPELINE], "WorkerClass": ["x:Y"]})
    try:
        yield info.name
    finally:
        db.delete_server(info.server)


def test_a_device_that_is_not_running_gets_a_row_without_values(
    qtbot: Any, absent_worker: str, gui: Any, demo_pipeline: Running, artifacts: Path
) -> None:
    services: ServicesPanel = panel(gui, "Services")
    host = demo_pipeline.tango_host
    assert f"tango://{host}/{absent_worker}" in services.cells
    # Its State sends an error event: that counts as arrived, the GUI does not wait for it.
    qtbot.waitUntil(lambda: not app.pending(gui), timeout=LIVE_MS)
    qtbot.waitUntil(
        lambda: services.cells[f"tango://{host}/{WORKERS[0]}"]["State"].text() == "ON",
        timeout=LIVE_MS,
    )
    absent = services.cells[f"tango://{host}/{absent_worker}"]["State"].text()
    assert absent not in ("ON", "ALARM", "RUNNING", "FAULT", "INIT")
    assert gui.grab().save(str(artifacts / "gui-worker-not-running.png"))


def test_the_screenshot_command(demo_pipeline: Running, artifacts: Path) -> None:
    shot = artifacts / "gui-command.png"
    shot.unlink(missing_ok=True)
    proc = subprocess.run(
        [_bin("tango-dranspose"), "gui", "--tango-host", demo_pipeline.tango_host,
         "--screenshot", str(shot), "--timeout", "20"],
        capture_output=True, text=True, timeout=90,
        env={**_env(), "QT_QPA_PLATFORM": "offscreen"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}


def run_gui(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["gui", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_errors_are_one_line_with_status_2(
    demo_pipeline: Running, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = demo_pipeline.tango_host
    monkeypatch.delenv("TANGO_HOST", raising=False)
    code, err = run_gui(capsys)
    assert (code, err) == (
        2,
        "tango-dranspose gui: error: no Tango DB: set TANGO_HOST or pass --tango-host HOST:PORT",
    )
    code, err = run_gui(capsys, "--tango-host", f"127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the Tango DB" in err and "\n" not in err
    code, err = run_gui(capsys, "--tango-host", host, "--pipeline", "nope")
    assert code == 2 and "no pipeline 'nope'" in err and "pipelines: demo" in err
    assert "\n" not in err

    # A second pipeline in the DB: no default any more, the error lists both.
    db = tango.Database(*host.split(":"))
    info = tango.DbDevInfo()
    info.name, info._class, info.server = (
        "other/dranspose/controller",
        "DransposeController",
        "DransposeController/gui-test-other",
    )
    db.add_device(info)
    db.put_device_property(info.name, {"Pipeline": ["other"]})
    try:
        code, err = run_gui(capsys, "--tango-host", host)
        assert code == 2 and "several pipelines" in err and "demo, other" in err
        assert "--pipeline" in err and "\n" not in err
    finally:
        db.delete_server(info.server)


def test_the_cli_lists_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tango_dranspose.cli", "gui", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "--screenshot" in out and "--pipeline" in out
