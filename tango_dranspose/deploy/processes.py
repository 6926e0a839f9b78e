"""Child processes of a deployment: started in their own process group, logged to a file,
stopped with SIGTERM (then SIGKILL), and never left behind by the parent.

Left behind they would keep their ports and the state directory. A parent that exits
normally, or on an exception, kills what is still running (atexit); one killed outright
(SIGKILL, the OOM killer) cannot, so on Linux every child is started under
``setpriv --pdeathsig KILL``: the kernel kills it when the parent dies.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

_LIVE: set[subprocess.Popen[bytes]] = set()
# util-linux's setpriv sets the parent-death signal and execs the command: no Python code runs
# between fork and exec (a preexec_fn could deadlock in a parent with threads, as test
# processes holding a Tango client have). Without it, children are not tied to the parent.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


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
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._sent: set[int] = set()
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "ab")  # noqa: SIM115 - lives as long as the child
        # The kernel sends the signal when the thread that started the child ends: children
        # are started from the main thread, which lives as long as the process.
        tied = [_SETPRIV, "--pdeathsig", "KILL", "--"] if die_with_parent and _SETPRIV else []
        self.popen = subprocess.Popen(
            [*tied, *self.argv],
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

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the child's process group, once: after ``stop_all`` signalled
        every child, ``stop`` only waits (a server is not asked twice to shut down)."""
        if self.alive() and sig not in self._sent:
            self._sent.add(sig)
            with contextlib.suppress(OSError):
                os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the child (unless done already), wait for it, SIGKILL it after ``timeout``;
        its exit status (negative: the signal that ended it)."""
        if self.alive():
            self.send_signal(sig)
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


def stop_all(
    children: Iterable[Child], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> list[int | None]:
    """Stop children together: signal all, then wait for each; their exit statuses."""
    children = list(children)
    for child in children:
        child.send_signal(sig)
    return [child.stop(sig, timeout) for child in children]


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
