"""Tango access control: the facility's ``TangoAccessControl`` server on the C++ Tango DB.

How Tango decides (cppTango's client library, which pytango wraps; nothing in our device
servers): a client whose DB's free property ``CtrlSystem``/``Services`` names an
``AccessControl/...`` service asks that device, once per device it connects to, for its rights,
sending the user name of its effective uid (``getpwuid(geteuid())``, lower-cased: not ``USER``
or ``LOGNAME``) and its interface addresses (IPv4, loopback left out unless there is nothing
else). With ``read`` rights the library itself refuses attribute writes and every command but
those of the class's ``AllowedAccessCmd`` (``State``, ``Status`` and the admin device's
read-only commands by default) with ``API_ReadOnlyMode``; reads and events work. The
environment variable ``SUPER_TANGO=true`` makes the library skip the check (write access),
and a service registered but not answering gives everyone read access.

The rules live in the Tango DB's own tables (``access_address``, ``access_device``, created by
the ``tango-db`` schema with the default rule "user ``*``, from ``*.*.*.*``, write on
``*/*/*``") and the schema registers ``TangoAccessControl/1`` with ``sys/access_control/1``:
the ``tango-accesscontrol`` package ships the binary only.

``start_access_control`` runs the server against a DB from ``start_cpp_db`` and registers the
service; ``grant`` sets a rule through the device's commands.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import sys
from pathlib import Path

from tango_dranspose.deploy.database import MARIADB_CLIENT, TangoDb, cpp_db_unavailable
from tango_dranspose.deploy.processes import Child, StartupError, wait_until

TANGO_ACCESS_CONTROL = Path("/usr/lib/tango/TangoAccessControl")
SERVER = "TangoAccessControl/1"
DEVICE = "sys/access_control/1"
SERVICE = f"AccessControl/tango:{DEVICE}"
RIGHTS = ("read", "write")
_ADDRESS = re.compile(r"^(\d{1,3}|\*)(\.(\d{1,3}|\*)){3}$")


def access_control_unavailable() -> str | None:
    """Why TangoAccessControl cannot run here (None when it can)."""
    reason = cpp_db_unavailable()
    if reason:
        return reason
    if not TANGO_ACCESS_CONTROL.exists():
        return f"{TANGO_ACCESS_CONTROL} missing (Debian package tango-accesscontrol)"
    return None


def _admin(db: TangoDb, script: str, *args: str, timeout: float = 30.0) -> str:
    """Run ``script`` with the Tango client in a fresh interpreter, as an administrator.

    Fresh: a client library that looked at the DB before the service was registered never
    checks access, and one that did keeps the rights it was given; administration must not
    depend on either. SUPER_TANGO=true is how Tango's own tools (the TangoAccessControl
    server, as Debian's init script starts it) are exempt from the rules they serve.
    """
    env = {k: v for k, v in os.environ.items() if k != "ACCESS_DEVNAME"}
    env.update({**db.env, "SUPER_TANGO": "true"})
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise StartupError(f"the Tango client did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise StartupError(f"the Tango client failed: {' '.join(lines[-12:])}")
    return done.stdout


_REGISTER = """
import sys, tango
db = tango.Database()
server, device = sys.argv[1], sys.argv[2]
if device not in db.get_device_name(server, "TangoAccessControl").value_string:
    info = tango.DbDevInfo()
    info.name, info._class, info.server = device, "TangoAccessControl", server
    db.add_device(info)
"""

_ANSWERS = """
import sys, tango
proxy = tango.DeviceProxy(sys.argv[1])
proxy.set_timeout_millis(3000)
print(proxy.state())
"""

_SERVICE = """
import sys, tango
tango.DeviceProxy(sys.argv[1]).RegisterService()
print(*tango.Database().get_property("CtrlSystem", ["Services"])["Services"], sep="\\n")
"""

_GRANT = """
import json, sys, tango
user, address, pattern, rights = json.loads(sys.argv[2])
proxy = tango.DeviceProxy(sys.argv[1])
if address and address not in proxy.GetAddressByUser(user):
    proxy.AddAddressForUser([user, address])
pairs = list(proxy.GetDeviceByUser(user))
for dev, old in zip(pairs[::2], pairs[1::2]):
    if dev == pattern:
        proxy.RemoveDeviceForUser([user, dev, old])
proxy.AddDeviceForUser([user, pattern, rights])
print(json.dumps({"addresses": list(proxy.GetAddressByUser(user)),
                  "devices": list(proxy.GetDeviceByUser(user))}))
"""


def _sql(state_dir: Path, text: str) -> None:
    sock = state_dir / "mysqld.sock"
    user = pwd.getpwuid(os.geteuid()).pw_name
    done = subprocess.run(
        [str(MARIADB_CLIENT), "--no-defaults", f"--socket={sock}", f"--user={user}", "tango"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise StartupError(f"MariaDB refused {text.strip()!r}: {done.stderr.strip()}")


def start_access_control(db: TangoDb, state_dir: Path, timeout: float = 40.0) -> Child:
    """Run TangoAccessControl on ``db`` (a ``start_cpp_db`` DB; ``state_dir`` is the one it
    was started with: the server reaches MariaDB through its socket and option file there)
    and register it as the DB's access control service. Returns the server's process.

    From then on every client's rights come from the rules (``grant``); the schema's default
    lets everyone write until a rule says otherwise. The rules stay in the DB: stopping the
    process leaves the service registered, and clients then get read access only.
    """
    reason = access_control_unavailable()
    if reason:
        raise StartupError(reason)
    if db.kind != "cpp":
        raise StartupError(
            f"TangoAccessControl keeps its rules in the C++ DB's MariaDB, not in {db.kind}"
        )
    state_dir = state_dir.resolve()
    if not (state_dir / "my.cnf").exists() or not (state_dir / "mysqld.sock").exists():
        raise StartupError(f"{state_dir} is not the state directory of a running start_cpp_db")
    # The schema declares access_*.updated "timestamp NOT NULL" without a default, counting on
    # MySQL's old implicit one; MariaDB 10.10+ (explicit_defaults_for_timestamp on, Debian 12
    # has 10.11) has none, and then every rule TangoAccessControl 9.3 inserts fails with
    # "Field 'updated' doesn't have a default value". Giving the column the default it used
    # to get implicitly changes nothing else.
    _sql(
        state_dir,
        "".join(
            f"ALTER TABLE {table} MODIFY updated timestamp NOT NULL "
            "DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP;"
            for table in ("access_address", "access_device")
        ),
    )
    # The tango-db schema registers it; a DB loaded otherwise may not have.
    _admin(db, _REGISTER, SERVER, DEVICE)
    server = Child(
        "TangoAccessControl",
        [str(TANGO_ACCESS_CONTROL), SERVER.split("/")[1], "-ORBendPoint", "giop:tcp:127.0.0.1:"],
        state_dir / "TangoAccessControl.log",
        env={
            **db.env,
            # It reads the rules with the DB's credentials (the MYSQL_* variables DataBaseds
            # takes) and, like DataBaseds, finds the private socket through $MARIADB_HOME.
            "MARIADB_HOME": str(state_dir),
            "HOME": str(state_dir),
            "MYSQL_USER": "tango",
            "MYSQL_PASSWORD": "tango",
            "MYSQL_HOST": "localhost",
            "MYSQL_DATABASE": "tango",
            # It is a Tango client itself (of the DB): exempt, as Debian's init script runs it.
            "SUPER_TANGO": "true",
        },
    )
    try:
        server.wait_for_line(r"Ready to accept request", timeout)

        def answers() -> bool:
            try:
                return _admin(db, _ANSWERS, DEVICE, timeout=15).strip() == "ON"
            except StartupError:
                return False

        wait_until(answers, timeout, f"{DEVICE} did not answer", server)
        # The server's own command writes CtrlSystem/Services (AccessControl/tango:DEVICE).
        services = _admin(db, _SERVICE, DEVICE).split()
        if SERVICE not in services:
            raise StartupError(
                f"CtrlSystem/Services is {services} after RegisterService, without {SERVICE}"
            )
    except BaseException:
        server.stop()
        raise
    return server


def _address(host: str) -> str:
    if _ADDRESS.match(host):
        return host
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise ValueError(f"{host!r} is neither an IPv4 address pattern nor a host name") from exc


def grant(
    db: TangoDb, user: str, host: str | None, device_pattern: str, rights: str
) -> dict[str, list[str]]:
    """Give ``user`` ``rights`` ("read" or "write") on the devices ``device_pattern`` matches
    (``*`` for any part: ``b308a/dranspose/*``), replacing the user's earlier rule for that
    pattern (TangoAccessControl would keep both), through the access control device.

    ``user`` is a login name, lower case (the client library lower-cases it), or ``*`` for
    everyone without rules of their own. ``host``: an IPv4 address pattern (``192.0.2.*``)
    or a host name (resolved here) added to the addresses the user's rights hold from; a user
    with addresses of their own has read access only from elsewhere; one without any has the
    addresses of ``*``. None adds no address. Returns the user's addresses and rules.
    """
    if rights not in RIGHTS:
        raise ValueError(f"rights must be one of {RIGHTS}, not {rights!r}")
    if device_pattern.count("/") != 2:
        raise ValueError(f"{device_pattern!r} is not a device pattern (DOMAIN/FAMILY/MEMBER)")
    address = _address(host) if host else ""
    out = _admin(db, _GRANT, DEVICE, json.dumps([user, address, device_pattern, rights]))
    result: dict[str, list[str]] = json.loads(out)
    return result
