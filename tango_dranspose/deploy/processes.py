"""Child processes of a deployment: started in their own process group, logged to a file,
stopped with SIGTERM (then SIGKILL), and never left behind by the parent."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for popen in list(_LIVE):
        with contextlib.suppress(OSError):
            os.killpg(popen.pid, signal.SIGKILL)


atexit.register(_kill_leftovers)


class Child:
    """One child process; standard output and error go to ``log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "ab")  # noqa: SIM115 - lives as long as the child
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            start_new_session=True,  # its own process group: Ctrl-C reaches the parent only
        )
        _LIVE.add(self.popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 2000) -> str:
        return self.output()[-chars:]

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of ``pattern`` in the child's output (waits for it)."""
        regex = re.compile(pattern, re.MULTILINE)
        found = wait_until(
            lambda: regex.search(self.output()),
            timeout,
            f"{self.name} did not print {pattern!r}",
            self,
        )
        assert isinstance(found, re.Match)
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.alive():
            with contextlib.suppress(OSError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        _LIVE.discard(self.popen)
        self._out.close()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would (for tests of failure handling)."""
        with contextlib.suppress(OSError):
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class StartupError(RuntimeError):
    """A child did not come up; the message carries the end of its log."""


def wait_until(
    check: Callable[[], object],
    timeout: float,
    what: str,
    child: Child | None = None,
    interval: float = 0.05,
) -> object:
    """Poll ``check`` until it returns something true (returned), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if child is not None and not child.alive():
            raise StartupError(
                f"{what}: {child.name} exited with status {child.popen.returncode}; "
                f"its log ({child.log}) ends with:\n{child.tail()}"
            )
        if time.monotonic() > deadline:
            tail = f"; its log ({child.log}) ends with:\n{child.tail()}" if child else ""
            raise StartupError(f"{what} within {timeout:.0f} s{tail}")
        time.sleep(interval)
