"""The README's demo command, as a new user runs it (it starts its own Tango DB)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import pytest

from tango_dranspose.deploy import processes
from tango_dranspose.deploy.processes import wait_until


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


def _start_time(pid: int) -> str | None:
    """The process's start time (to tell it from a later process with its pid), or None
    when it has ended (gone, or a zombie nobody reaped: its work is over)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _descendants(pid: int) -> dict[int, str]:
    """Every living descendant of ``pid``: pid -> start time."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                started = _start_time(child)
                if started is not None:
                    found[child] = started
                    todo.append(child)
    return found


class _Output:
    """The demo's output, read on a thread; wait for a line without blocking on the pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, fragment: str, timeout: float) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._done or any(fragment in line for line in self.lines), timeout
            )
            if not ok or not any(fragment in line for line in self.lines):
                raise AssertionError(f"no {fragment!r} in the demo's output:\n{self.text()}")


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_a_kept_demo_ended_by_a_signal_leaves_no_process_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM and SIGHUP (the terminal closed) stop everything as Ctrl-C does; after a
    SIGKILL, which the demo cannot see, its children die with it (parent-death signal)."""
    if sig == signal.SIGKILL and processes._SETPRIV is None:
        pytest.skip("no setpriv here: children are not tied to their parent")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tango_dranspose.cli", "demo", "--keep", "--frames", "10",
         "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's signals go to the demo only, as here
    )  # fmt: skip
    out = _Output(proc)
    try:
        out.wait_for("export TANGO_HOST=", timeout=180)
        children = _descendants(proc.pid)
        # the Tango DB, the camera simulator and the five device servers
        assert len(children) >= 7, (children, out.text())
        proc.send_signal(sig)
        status = proc.wait(timeout=60)

        def survivors() -> dict[int, str]:
            return {p: t for p, t in children.items() if _start_time(p) == t}

        try:
            wait_until(lambda: not survivors(), 30, "the demo's children did not exit")
        except processes.StartupError:
            left = survivors()
            for pid in left:  # not left behind by this test either
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"still running after {sig.name}: {left}\n{out.text()}") from None
    finally:
        if proc.poll() is None:
            proc.kill()  # its children follow (parent-death signal)
            proc.wait()
    if sig != signal.SIGKILL:
        assert status == 128 + sig, out.text()
        assert f"stopped by {sig.name}" in out.text()
        assert "shutting down" in out.text()
    else:
        assert status == -signal.SIGKILL
