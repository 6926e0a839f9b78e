"""Building the TaurusGui of a pipeline, laying out its panels, and taking screenshots.

The panels come from the TaurusGui config module ``taurus_gui/config.py``, which reads the
pipeline from the environment (``TANGO_HOST``, ``TANGO_DRANSPOSE_PIPELINE``). The GUI runs in
Taurus' safe mode (no saved settings: the panels are generated from the Tango DB each time)
and never asks to save settings on close.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from taurus.external.qt import Qt
from taurus.qt.qtgui.application import TaurusApplication
from taurus.qt.qtgui.taurusgui import TaurusGui

CONFIG = Path(__file__).resolve().parents[2] / "taurus_gui" / "config.py"
PANELS = ("Overview", "Services", "Parameters", "Results", "Ledger")
SIZE = (1500, 950)


def application() -> Any:
    """The running QApplication, or a new TaurusApplication."""
    app = Qt.QApplication.instance()
    if app is None:
        app = TaurusApplication(
            [sys.argv[0] if sys.argv else "tango-dranspose"],
            cmd_line_parser=None,
            app_name="tango-dranspose gui",
            org_name="tango-dranspose",
        )
    return app


def headless_dialogs() -> None:
    """Make TaurusGui's modal message boxes print instead of waiting for a click that never
    comes (offscreen runs): an error prints its text and answers Abort, so TaurusGui exits
    (SystemExit) instead of hanging; a question answers Yes."""

    def critical(parent: Any, title: str, text: str, *args: Any, **kwargs: Any) -> Any:
        print(f"tango-dranspose gui: {title}: {text}", file=sys.stderr)
        return Qt.QMessageBox.Abort

    def question(*args: Any, **kwargs: Any) -> Any:
        return Qt.QMessageBox.Yes

    Qt.QMessageBox.critical = staticmethod(critical)
    Qt.QMessageBox.question = staticmethod(question)


def build(config: Path = CONFIG, headless: bool = False) -> Any:
    """The TaurusGui of the pipeline the environment names, its panels laid out.

    TaurusGui installs an exception hook that shows each uncaught exception in a modal
    message box; ``headless`` keeps the hook that was there (a box nobody can close would
    hang an offscreen run, and pytest-qt reports exceptions through its own hook)."""
    application()
    hook = sys.excepthook
    gui = TaurusGui(confname=str(config), configRecursionDepth=0)
    if headless:
        sys.excepthook = hook
    gui.SAVE_SETTINGS_ON_CLOSE = False
    arrange(gui)
    gui.resize(*SIZE)
    return gui


def arrange(gui: Any) -> None:
    """TaurusGui stacks every panel as a tab; lay them out instead: the overview over the
    ledger (with the parameters as a second tab) on the left, the results over the services
    on the right."""
    # No room for Taurus' manual (it needs QtWebEngine) and logo bar in a pipeline view.
    if "Manual" in gui.getPanelNames():
        gui.getPanel("Manual").hide()
    if getattr(gui, "jorgsBar", None) is not None:
        gui.jorgsBar.hide()
    names = set(gui.getPanelNames())
    panels = {n: gui.getPanel(n) for n in PANELS if n in names}
    if set(panels) != set(PANELS):
        return  # a customised config: leave its layout alone
    for panel in panels.values():
        gui.removeDockWidget(panel)
    overview, services = panels["Overview"], panels["Services"]
    parameters, results, ledger = panels["Parameters"], panels["Results"], panels["Ledger"]
    gui.addDockWidget(Qt.Qt.LeftDockWidgetArea, overview)
    gui.addDockWidget(Qt.Qt.RightDockWidgetArea, results)
    gui.splitDockWidget(overview, ledger, Qt.Qt.Vertical)
    gui.tabifyDockWidget(ledger, parameters)
    gui.splitDockWidget(results, services, Qt.Qt.Vertical)
    for panel in panels.values():
        panel.show()
    ledger.raise_()
    gui.resizeDocks([overview, results], [520, 980], Qt.Qt.Horizontal)
    gui.resizeDocks([overview, ledger], [600, 250], Qt.Qt.Vertical)
    gui.resizeDocks([results, services], [640, 220], Qt.Qt.Vertical)


def pending(gui: Any) -> list[str]:
    """What the panels still wait for (attributes that sent no event yet)."""
    out: list[str] = []
    for name in gui.getPanelNames():
        widget = gui.getPanel(name).widget()
        if hasattr(widget, "pending"):
            out.extend(widget.pending())
    return out


def process_events_for(seconds: float) -> None:
    """Run the Qt event loop for a while (events arrive, widgets repaint); not a sleep."""
    loop = Qt.QEventLoop()
    Qt.QTimer.singleShot(max(0, int(seconds * 1000)), loop.quit)
    loop.exec_()


def wait_until_live(gui: Any, timeout: float) -> list[str]:
    """Until every panel shows live values, or ``timeout``; returns what is still missing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = pending(gui)
        if not missing or time.monotonic() >= deadline:
            return missing
        process_events_for(0.1)


def screenshot(gui: Any, path: Path, timeout: float = 30.0, settle: float = 1.0) -> list[str]:
    """Show the GUI, wait for live values, let it repaint, save a PNG of the main window
    (docked panels included); returns what had not arrived by the timeout."""
    gui.show()
    missing = wait_until_live(gui, timeout)
    process_events_for(settle)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not gui.grab().save(str(path)):
        raise OSError(f"cannot write {path}")
    return missing


def run(config: Path, shot: Path | None, timeout: float) -> int:
    """Open the GUI (until its window closes), or save a screenshot and return."""
    if shot is not None:
        headless_dialogs()
    app = application()
    try:
        gui = build(config, headless=shot is not None)
    except SystemExit:
        print("tango-dranspose gui: error: the GUI could not be built (see above)", file=sys.stderr)
        return 1
    if shot is None:
        gui.show()
        code: int = app.exec_()
        return code
    missing = screenshot(gui, shot, timeout)
    gui.close()
    if missing:
        print(
            f"tango-dranspose gui: saved {shot}, but after {timeout:.0f} s these still had "
            f"no value: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 1
    print(f"saved {shot}")
    return 0
