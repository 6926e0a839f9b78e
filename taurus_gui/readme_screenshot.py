"""Regenerate ``docs/images/gui.png``: the GUI on a fresh demo pipeline, after one scan.

    .venv/bin/python taurus_gui/readme_screenshot.py [OUT.png]

Starts the demo deployment (as ``tango-dranspose demo`` does, without its scan), opens the
GUI offscreen, arms one scan through the controller while the GUI watches (so the trend has
history), waits until the scan is shown as finished, and saves the window as an 8-bit PNG
(about 50 kB). Everything it started is stopped at the end.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("QT_API", "pyqt5")

REPO = Path(__file__).resolve().parent.parent
FRAMES = 400


def main(out: Path) -> int:
    from tango_dranspose.deploy.demo import CONTROLLER, Demo

    with tempfile.TemporaryDirectory(prefix="gui-screenshot-") as tmp:
        demo = Demo(Path(tmp), frames=FRAMES, interval=0.005)
        try:
            demo.start()
            assert demo.db is not None
            os.environ["TANGO_HOST"] = demo.db.tango_host
            return shoot(demo.db.tango_host, CONTROLLER, out)
        finally:
            demo.stop()


def shoot(tango_host: str, controller: str, out: Path) -> int:
    import tango
    from taurus.external.qt import Qt

    from tango_dranspose.core.triggermap import round_robin_map
    from tango_dranspose.gui import app

    app.application()
    app.headless_dialogs()
    gui = app.build(headless=True)
    gui.show()
    app.wait_until_live(gui, 20)
    app.process_events_for(10)  # some history in the trends before the scan
    ctrl = tango.DeviceProxy(f"tango://{tango_host}/{controller}")
    ctrl.set_timeout_millis(30_000)
    request = {
        "map": round_robin_map(["camera"], FRAMES, 2).to_json(),
        "title": "README screenshot",
        "parameters": {"roi": "[20, 44, 20, 44]"},
    }
    scan_id = str(ctrl.Arm(json.dumps(request)))
    labels = gui.getPanel("Overview").widget().labels
    deadline = time.monotonic() + 60
    while (labels["ScanId"].text(), labels["ScanState"].text()) != (scan_id, "finished"):
        if time.monotonic() > deadline:
            print("the scan did not finish on screen within 60 s", file=sys.stderr)
            return 1
        app.process_events_for(0.1)
    missing = app.wait_until_live(gui, 20)
    app.process_events_for(4)
    image = gui.grab().toImage()
    small = image.convertToFormat(
        Qt.QImage.Format_Indexed8, Qt.Qt.ThresholdDither | Qt.Qt.AvoidDither
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(str(out))
    gui.close()
    print(f"saved {out}" + (f" (no value yet: {', '.join(missing)})" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs/images/gui.png"))
