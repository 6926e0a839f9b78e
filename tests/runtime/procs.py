"""Starting services as real processes and reading the endpoints they announce."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Proc:
    """A ``tango-dranspose`` subprocess whose stdout lines are collected by a thread."""

    def __init__(self, *args: str, name: str = "") -> None:
        self.name = name or args[0]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tango_dranspose.cli", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """The rest of the next stdout line starting with ``prefix`` (waits for it)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(
                    f"{self.name}: no '{prefix}' line; stderr: {''.join(self.stderr)[-2000:]}"
                ) from None
            if line is None:
                raise RuntimeError(f"{self.name} exited: {''.join(self.stderr)[-2000:]}")
            if line.startswith(prefix + " "):
                return line[len(prefix) + 1 :]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()
