"""The README's demo command, as a new user runs it (it starts its own Tango DB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py


def test_the_demo_runs_a_scan_through_the_tango_suite_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tango_dranspose.cli", "demo", "--frames", "40",
         "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "TANGO_HOST=127.0.0.1:" in out
    assert "finished: 42 of 42 events" in out
    assert "ledger camera: delivered 42, discarded 0, missing 0, dropped 0" in out
    assert "demo/dranspose/reducer/frames = 40" in out
    results = list((tmp_path / "results").glob("*_processed.h5"))
    assert len(results) == 1
    with h5py.File(results[0], "r") as f:
        assert f["roi/intensity"].shape == (40,)
    assert "shutting down" in out
    # Every server it started has exited: their logs end and no process holds them.
    logs = sorted((tmp_path / "logs").glob("Dranspose*.log"))
    assert len(logs) == 5
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
