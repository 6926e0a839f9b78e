"""Stress: the demo's whole suite started and stopped 20 times in a row beside two CPU hogs.

Each cycle starts the Tango DB and the five device servers of ``tango-db/demo.json``, waits
until every device answers and the workers' parameters are ``param_*`` attributes of the
controller (added at run time, an interface change), and stops it all: every server must exit
with status 0. The servers run in a time namespace whose clocks start at zero, as on a machine
that just booted: cppTango 10.3.3 crashed adding attributes only during a machine's first ten
minutes (decision 0012), so without it a machine up for longer could never show the crash.

Select it with ``-k stress`` (or leave it out with ``-k "not stress"``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import tango

from tango_dranspose.deploy.database import start_pytango_db
from tango_dranspose.deploy.processes import Child, StartupError, stop_all, wait_until
from tango_dranspose.deploy.registration import load_config, register, servers
from tango_dranspose.deploy.servers import start_server

REPO = Path(__file__).resolve().parents[2]
CYCLES = 20
CONTROLLER = "demo/dranspose/controller"
# The parameters of the demo's worker payload (tango_dranspose.examples.roi:RoiWorker).
PARAMETERS = {"param_roi", "param_threshold"}
TIMEOUT = 60.0  # seconds for one step on a loaded 2-core machine


def _fresh_boot() -> list[str]:
    """A command prefix that runs a program with CLOCK_MONOTONIC and CLOCK_BOOTTIME near zero
    (``unshare --time``, as root or in a user namespace); [] where that is not allowed."""
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    # Offsets are fixed when the namespace is made, so each cycle asks for its own: its
    # servers see a machine up for 2 seconds. (A clock may not be made negative.)
    clocks = [f"--monotonic={-(int(now) - 2)}", f"--boottime={-(int(boot) - 2)}"]
    for extra in ([], ["--user", "--map-root-user"]):
        prefix = ["unshare", "--time", *extra, *clocks, "--"]
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
        except OSError:
            return []
        if ok:
            return prefix
    return []


def _cpu_hog(log: Path) -> Child:
    return Child("CPU hog", [sys.executable, "-c", "while True: pass"], log)


def test_stress_the_suite_starts_and_stops_cleanly_20_times_beside_cpu_hogs(
    tmp_path: Path,
) -> None:
    if not _fresh_boot():
        warnings.warn(
            "cannot make a time namespace here (unshare --time refused): the servers see this "
            "machine's real uptime, so the stress test cannot show decision 0012's crash",
            stacklevel=1,
        )
    config = load_config(REPO / "tango-db" / "demo.json")
    deployed = tmp_path / "demo-deployment.json"
    deployed.write_text(json.dumps(config))
    deployment = servers(config)
    devices = [d for _, _, devs in deployment for d in devs]
    hogs = [_cpu_hog(tmp_path / f"hog-{n}.log") for n in range(2)]
    started = time.monotonic()
    try:
        for cycle in range(CYCLES):
            _cycle(cycle, tmp_path, deployed, deployment, devices)
        assert all(hog.alive() for hog in hogs), "a CPU hog ended early"
    finally:
        stop_all(hogs, timeout=5)
    print(f"{CYCLES} cycles in {time.monotonic() - started:.0f} s beside 2 CPU hogs")


def _cycle(
    cycle: int,
    state: Path,
    deployed: Path,
    deployment: list[tuple[str, str, list[str]]],
    devices: list[str],
) -> None:
    # One sqlite file for every cycle: registered once, a fresh DB process each time. Logs
    # go to a directory per cycle, since a child appends to its log and an earlier cycle's
    # "Ready to accept request" would count as this one's.
    db = start_pytango_db(state / f"db-{cycle}", sqlite=str(state / "tango.sqlite"))
    children: list[Child] = []
    try:
        if cycle == 0:
            register(deployed, db.tango_host)
        logs = state / f"logs-{cycle}"
        fresh_boot = _fresh_boot()
        for server, instance, _ in deployment:
            children.append(start_server(server, instance, db.tango_host, logs, prefix=fresh_boot))
        for child in children:
            child.wait_for_line(r"^Ready to accept request", TIMEOUT)
        # Reads only: a client subscribing to the controller's events would open its event
        # socket and hide the crash this test is for.
        proxies = {d: tango.DeviceProxy(f"tango://{db.tango_host}/{d}") for d in devices}
        for name, proxy in proxies.items():
            proxy.set_timeout_millis(int(TIMEOUT * 1000))
            assert proxy.state() != tango.DevState.FAULT, (cycle, name, proxy.status())
        controller = next(c for c in children if c.name.startswith("DransposeController/"))

        def parameters_shown() -> bool:
            try:
                names = {a.lower() for a in proxies[CONTROLLER].get_attribute_list()}
            except tango.DevFailed:
                return False  # wait_until then says whether the controller died
            return names >= PARAMETERS

        wait_until(parameters_shown, TIMEOUT, f"cycle {cycle}: no {PARAMETERS}", controller)
        # Each server's devices still answer after the interface change.
        for proxy in proxies.values():
            proxy.state()
    except (StartupError, tango.DevFailed) as exc:
        why = exc.args[0].desc if isinstance(exc, tango.DevFailed) else exc
        ended = {c.name: c.popen.poll() for c in children if not c.alive()}
        raise AssertionError(f"cycle {cycle}: {why}\nservers that ended: {ended}") from None
    finally:
        statuses = dict(zip((c.name for c in children), stop_all(children), strict=True))
        db.stop()
    assert all(status == 0 for status in statuses.values()), (
        f"cycle {cycle}: exit statuses {statuses} (negative: killed by that signal; -11 is a "
        f"SIGSEGV); logs in {state / f'logs-{cycle}'}"
    )
    assert db.children[0].popen.returncode == 0, f"cycle {cycle}: the Tango DB did not exit cleanly"
