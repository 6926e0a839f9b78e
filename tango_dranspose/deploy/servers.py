"""Starting device servers as processes and waiting until their devices answer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tango_dranspose.deploy.database import _bin
from tango_dranspose.deploy.processes import Child, StartupError, wait_until


def start_server(
    server: str,
    instance: str,
    tango_host: str,
    log_dir: Path,
    host: str = "127.0.0.1",
    prefix: Sequence[str] = (),
) -> Child:
    """``SERVER INSTANCE`` as the Starter would run it, on ``host`` and a free port.

    ``prefix`` is a command that execs the server (e.g. ``unshare --time ...``, with which the
    stress test shows the server a freshly booted machine's clock)."""
    return Child(
        f"{server}/{instance}",
        [*prefix, _bin(server), instance, "-ORBendPoint", f"giop:tcp:{host}:0"],
        log_dir / f"{server}-{instance}.log",
        env={"TANGO_HOST": tango_host},
    )


_STATES = """
import json, sys, tango
out = {}
for name in sys.argv[2:]:
    try:
        p = tango.DeviceProxy(f"tango://{sys.argv[1]}/{name}")
        p.set_timeout_millis(2000)
        out[name] = str(p.state())
    except tango.DevFailed as exc:
        out[name] = "DOWN: " + exc.args[0].desc.strip().splitlines()[0]
print(json.dumps(out))
"""


def device_states(tango_host: str, devices: list[str]) -> dict[str, str]:
    """Each device's State, or ``DOWN: reason``; asked from a short-lived process, so the
    caller's process never holds an ORB (it may fork device servers later)."""
    proc = subprocess.run(
        [sys.executable, "-c", _STATES, tango_host, *devices],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return {d: f"DOWN: {proc.stderr.strip()[-200:]}" for d in devices}
    states: dict[str, str] = json.loads(proc.stdout)
    return states


def wait_for_devices(
    tango_host: str,
    devices: list[str],
    child: Child,
    timeout: float = 30.0,
    accept: tuple[str, ...] = ("ON", "ALARM", "RUNNING", "INIT", "FAULT"),
) -> dict[str, str]:
    """Until every device answers with a State in ``accept`` (by default: any, i.e. the server
    is up and its devices exported); returns the states."""
    last: dict[str, str] = {}

    def ready() -> bool:
        last.update(device_states(tango_host, devices))
        return all(last.get(d) in accept for d in devices)

    try:
        wait_until(ready, timeout, f"{child.name}: devices not ready", child, interval=0.2)
    except StartupError as exc:
        raise StartupError(f"{exc} (last states: {last})") from None
    return last
