"""Tango access control, with the facility's TangoAccessControl server on the C++ DB: a user
(or a host) with read access reads every attribute and gets events, while Arm, Stop, Abort
and parameter writes are refused with the standard DevFailed; a user with write access does
all of it. Our device servers take no part: cppTango's client library asks the access
control device and refuses on the client side.

The client library names the user by its effective uid (not USER or LOGNAME), so each client
runs in its own process and, for another user, sets its effective uid before it talks to
Tango (as cppTango's own comment foresees). It does so after its imports: the interpreter
and the venv may be readable by their owner only. Switching users needs root; this module
runs on its own DB, since it turns access control on.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango

from tango_dranspose.deploy.access import (
    access_control_unavailable,
    grant,
    start_access_control,
)
from tango_dranspose.deploy.database import TangoDb, start_cpp_db
from tango_dranspose.deploy.processes import Child, wait_until
from tests.runtime.procs import Proc
from tests.system.conftest import REPO, Events, Suite

P = "acl/dranspose"
CTRL, CAM, WORKER, RED = f"{P}/controller", f"{P}/cam", f"{P}/worker-1", f"{P}/reducer"
FINAL = ("finished", "stopped", "aborted", "failed", "interrupted")
READER = "nobody"  # no rule of its own: the default rule, read
REMOTE = "daemon"  # write on the pipeline, but only from an address no client here has
NO_CLIENT_HAS = "0.0.0.*"
REFUSED = "API_ReadOnlyMode"


def _why_not() -> str | None:
    reason = access_control_unavailable()
    if reason:
        return f"TangoAccessControl on the C++ DB: {reason}"
    if os.geteuid() != 0:
        return "clients as other users need root (cppTango names the user by the effective uid)"
    for user in (READER, REMOTE):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no user {user!r} on this machine"
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))

ADMIN = pwd.getpwuid(os.geteuid()).pw_name


def deployment(results: Path) -> dict[str, Any]:
    def dev(**props: Any) -> dict[str, Any]:
        extra = {k: v if isinstance(v, list) else [str(v)] for k, v in props.items()}
        return {"properties": {"Pipeline": ["acl"], "EventPeriod": ["0.2"], **extra}}

    payload = {"PayloadPath": [str(REPO)]}

    def one(cls: str, device: str, **props: Any) -> dict[str, Any]:
        return {"acl": {cls: {device: dev(**props)}}}

    return {
        "servers": {
            "DransposeController": one("DransposeController", CTRL),
            "DransposeIngester": one(
                "DransposeIngester",
                CAM,
                Streams="cam",
                Protocol="STINS",
                UpstreamUrl="pull+tcp://127.0.0.1:1",
            ),
            "DransposeWorker": one(
                "DransposeWorker",
                WORKER,
                WorkerClass="tests.runtime.payloads:ProbeWorker",
                **payload,
            ),
            "DransposeReducer": one(
                "DransposeReducer",
                RED,
                ReducerClass="tests.runtime.payloads:ColumnsReducer",
                ResultDir=str(results),
                **payload,
            ),
        }
    }


@dataclass
class Acl:
    db: TangoDb
    db_state: Path
    suite: Suite
    server: Child  # TangoAccessControl


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acl]:
    """Access control on from the start, as at a facility: the rules, then registration, the
    servers (as the test's own account, which has write rights, as a server's account needs
    for its DB writes), and one scan, so that there are results to read."""
    state = tmp_path_factory.mktemp("acl")
    db = start_cpp_db(state / "db")
    suite: Suite | None = None
    server: Child | None = None
    try:
        server = start_access_control(db, state / "db")
        # The schema's default rule lets everyone write: now only this account does.
        grant(db, ADMIN, None, "*/*/*", "write")
        grant(db, "*", None, "*/*/*", "read")
        grant(db, REMOTE, NO_CLIENT_HAS, f"{P}/*", "write")
        suite = Suite(db, deployment(state / "results"), state)
        assert suite.registration.applied
        suite.start()
        ctrl = suite.proxy(CTRL)
        wait_until(
            lambda: str(ctrl.state()) == "ON" and "param_fail_every" in ctrl.get_attribute_list(),
            60,
            f"controller not ready: {ctrl.status()}",
        )
        cam = Proc(
            "simulate", "stins", "-n", "4", "--shape", "8x8", "-t", "push", "--repeat", "5",
            name="cam",
        )  # fmt: skip
        try:
            suite.put_properties(CAM, {"UpstreamUrl": [f"pull+{cam.expect('listening')}"]})
            ing = suite.proxy(CAM)
            ing.Init()
            wait_until(lambda: str(ing.state()) == "ON", 30, f"ingester: {ing.status()}")
            scan = Events(ctrl, "ScanState")
            ctrl.Arm(json.dumps({"map": {"cam": [[{"constraint": i}] for i in range(4)]}}))
            assert scan.wait(lambda v: v in FINAL) == "finished", ctrl.status()
            scan.close()
        finally:
            cam.stop()
        red = suite.proxy(RED)
        wait_until(lambda: "count" in red.get_attribute_list(), 30, "count not published")
        yield Acl(db, state / "db", suite, server)
    finally:
        if suite is not None:
            suite.stop()
        if server is not None:
            server.stop()
        db.stop()


# A client in a fresh process (the client library checks a device's rights once, when it
# connects, and keeps them). argv: the user to be ("" for the process's own) and the
# operations as JSON, [kind, device, name, argument]; prints who it was and, per operation,
# {"value": ...} or the DevFailed's first {"reason", "desc"}.
CLIENT = r"""
import json, os, pwd, sys, threading
import numpy, tango
# Imported lazily by the event machinery; after seteuid the venv may be unreadable.
import tango.server

user, ops = sys.argv[1], json.loads(sys.argv[2])
if user:
    entry = pwd.getpwnam(user)
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)

def plain(value):
    if isinstance(value, numpy.ndarray):
        return value.tolist()
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, tango.DevState):
        return str(value)
    return value

def first_event(proxy, name):
    got, done = [], threading.Event()
    def push(ev):
        got.append(ev)
        done.set()
    eid = proxy.subscribe_event(name, tango.EventType.CHANGE_EVENT, push)
    try:
        if not done.wait(15):
            raise RuntimeError(f"no {name} event within 15 s")
    finally:
        proxy.unsubscribe_event(eid)
    if got[0].err:
        raise tango.DevFailed(*got[0].errors)
    return got[0].attr_value.value

proxies = {}
out = []
for kind, device, name, arg in ops:
    try:
        if device not in proxies:
            proxies[device] = tango.DeviceProxy(device)
            proxies[device].set_timeout_millis(30000)
        proxy = proxies[device]
        if kind == "read":
            value = proxy.read_attribute(name).value
        elif kind == "event":
            value = first_event(proxy, name)
        elif kind == "command":
            value = proxy.command_inout(name) if arg is None else proxy.command_inout(name, arg)
        elif kind == "write":
            proxy.write_attribute(name, arg)
            value = None
        else:
            raise ValueError(kind)
        out.append({"value": plain(value)})
    except tango.DevFailed as exc:
        out.append({"reason": exc.args[0].reason, "desc": exc.args[0].desc})
print(json.dumps({"user": pwd.getpwuid(os.geteuid()).pw_name, "results": out}))
"""

Op = tuple[str, str, str, Any]


def client(acl: Acl, user: str, ops: list[Op], **env: str) -> list[dict[str, Any]]:
    """Run ``ops`` as ``user`` (empty: this process's own user) in a fresh client."""
    base = {k: v for k, v in os.environ.items() if k not in ("SUPER_TANGO", "ACCESS_DEVNAME")}
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, user, json.dumps(ops)],
        capture_output=True,
        text=True,
        # HOME: Tango reads $HOME/.tangorc, which another user may not be allowed to open.
        env={**base, **acl.db.env, "HOME": "/", **env},
        cwd="/",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["user"] == (user or ADMIN)
    results: list[dict[str, Any]] = answer["results"]
    return results


def arm_request(scan_id: str, events: int = 50) -> str:
    return json.dumps(
        {"map": {"cam": [[{"constraint": i}] for i in range(events)]}, "scan_id": scan_id}
    )


def refused(result: dict[str, Any], what: str) -> None:
    """The DevFailed a read-only client gets, naming what it was refused."""
    assert result.get("reason") == REFUSED, result
    assert what in result["desc"] and "not authorized" in result["desc"], result


WRITES: list[Op] = [
    ("command", CTRL, "Arm", arm_request("not-allowed")),
    ("command", CTRL, "Stop", None),
    ("command", CTRL, "Abort", None),
    ("write", CTRL, "param_fail_every", 7),
]


def assert_writes_refused(acl: Acl, results: list[dict[str, Any]]) -> None:
    arm, stop, abort, param = results
    refused(arm, f"Command Arm on device {CTRL}")
    refused(stop, f"Command Stop on device {CTRL}")
    refused(abort, f"Command Abort on device {CTRL}")
    refused(param, f"Writing attribute(s) on device {CTRL}")
    # Refused before reaching the device: nothing happened there.
    ctrl = acl.suite.proxy(CTRL)
    assert ctrl.ScanId != "not-allowed"
    assert ctrl.ScanState in FINAL
    assert ctrl.param_fail_every != 7


def test_a_read_only_user_reads_every_attribute_and_gets_events(acl: Acl) -> None:
    reads: list[Op] = [
        ("read", CTRL, "State", None),
        ("read", CTRL, "Status", None),
        ("read", CTRL, "ScanState", None),
        ("read", CTRL, "Progress", None),
        ("read", CTRL, "Ledger", None),
        ("read", CTRL, "param_fail_every", None),
        ("read", RED, "count", None),
        ("command", CTRL, "State", None),  # State and Status are allowed commands too
        ("event", CTRL, "ScanState", None),
    ]
    results = client(acl, READER, reads)
    assert all("value" in r for r in results), results
    values = [r["value"] for r in results]
    ctrl, red = acl.suite.proxy(CTRL), acl.suite.proxy(RED)
    assert values[0] == str(ctrl.state()) == values[7]
    assert values[1] == ctrl.status()
    assert values[2] == ctrl.ScanState == values[8] == "finished"
    assert values[3] == pytest.approx(100.0) and ctrl.Progress == pytest.approx(100.0)
    assert values[4] == list(ctrl.Ledger) and values[4][0].startswith("cam: delivered 6")
    assert values[5] == ctrl.param_fail_every
    assert values[6] == red.read_attribute("count").value > 0


def test_a_read_only_user_cannot_arm_stop_abort_or_set_parameters(acl: Acl) -> None:
    version = acl.suite.proxy(CTRL).ParameterVersion
    assert_writes_refused(acl, client(acl, READER, WRITES))
    assert acl.suite.proxy(CTRL).ParameterVersion == version


def test_write_rights_from_another_host_are_read_access_here(acl: Acl) -> None:
    results = client(acl, REMOTE, [("read", CTRL, "ScanState", None), *WRITES])
    assert results[0] == {"value": acl.suite.proxy(CTRL).ScanState}
    assert_writes_refused(acl, results[1:])


def test_a_user_with_write_access_arms_stops_aborts_and_sets_parameters(acl: Acl) -> None:
    # The camera is gone: the scans wait for frames until stopped or aborted.
    results = client(
        acl,
        "",
        [
            ("write", CTRL, "param_fail_every", 5),
            ("read", CTRL, "param_fail_every", None),
            ("command", CTRL, "Arm", arm_request("acl-stopped")),
            ("read", CTRL, "ScanState", None),
            ("command", CTRL, "Stop", None),
            ("read", CTRL, "ScanState", None),
            ("command", CTRL, "Arm", arm_request("acl-aborted")),
            ("command", CTRL, "Abort", None),
            ("read", CTRL, "ScanState", None),
        ],
    )
    assert all("value" in r for r in results), results
    values = [r["value"] for r in results]
    assert values[1] == 5
    assert values[2] == "acl-stopped" and values[3] == "running"
    assert values[5] == "stopped"
    assert values[6] == "acl-aborted" and values[8] == "aborted"
    ctrl = acl.suite.proxy(CTRL)
    assert ctrl.ScanId == "acl-aborted" and ctrl.param_fail_every == 5
    # The controller memorized the value in the DB (a write of its own, as its account).
    db = tango.Database(*acl.db.tango_host.split(":"))
    props = db.get_device_attribute_property(CTRL, ["param_fail_every"])["param_fail_every"]
    assert list(props["__value"]) == ["5"]


def test_the_check_is_in_the_client_library(acl: Acl) -> None:
    """What the rules rest on, as the docs say: the user is the effective uid (USER and
    LOGNAME change nothing), and SUPER_TANGO=true turns the check off in that client."""
    as_admin = client(
        acl, "", [("write", CTRL, "param_fail_every", 3)], USER=READER, LOGNAME=READER
    )
    assert as_admin == [{"value": None}]
    assert acl.suite.proxy(CTRL).param_fail_every == 3
    super_reader = client(acl, READER, [("write", CTRL, "param_fail_every", 0)], SUPER_TANGO="true")
    assert super_reader == [{"value": None}]
    assert acl.suite.proxy(CTRL).param_fail_every == 0


def test_with_the_service_registered_but_down_everyone_reads_only(acl: Acl) -> None:
    acl.server.stop()
    try:
        results = client(acl, "", [("read", CTRL, "ScanState", None), WRITES[0], WRITES[3]])
        assert results[0] == {"value": acl.suite.proxy(CTRL).ScanState}
        refused(results[1], "an error occurs while talking to the Controlled Access Service")
        refused(results[2], f"Writing attribute(s) on device {CTRL}")
    finally:
        acl.server = start_access_control(acl.db, acl.db_state)
    # The rules are kept in the DB: back as they were.
    assert client(acl, "", [("write", CTRL, "param_fail_every", 0)]) == [{"value": None}]
