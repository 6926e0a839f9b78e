"""Tango database servers: the embedded pytango-db (sqlite) and the facility C++ DataBaseds.

``start_pytango_db`` runs pytango-db's ``PyDatabaseds`` on a free port with its sqlite file
under a state directory. ``start_cpp_db`` runs Debian's ``DataBaseds`` on a private MariaDB
(both from the ``tango-db`` package; needs root to start MariaDB), as facilities run it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tango_dranspose.deploy.processes import Child, StartupError, wait_until

CPP_DATABASEDS = Path("/usr/lib/tango/DataBaseds")
MARIADB = Path("/usr/sbin/mariadbd")
TANGO_SCHEMA = Path("/usr/share/dbconfig-common/data/tango-db/install/mysql")


@dataclass
class TangoDb:
    tango_host: str
    kind: str  # "pytango-db" or "cpp"
    children: list[Child] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"TANGO_HOST": self.tango_host}

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def _bin(name: str) -> str:
    """A console script of this environment (beside the running interpreter), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _db_answers(tango_host: str) -> bool:
    host, port = tango_host.rsplit(":", 1)
    try:
        # A fresh process: the Tango client library in this process must not cache a DB
        # connection made before the server was up (and must not hold omniORB threads when
        # the caller forks device servers later).
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import tango,sys; tango.Database(sys.argv[1], int(sys.argv[2])).get_info()",
                host,
                port,
            ],
            capture_output=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0


def start_pytango_db(state_dir: Path, sqlite: str | None = None, timeout: float = 40.0) -> TangoDb:
    """Start PyDatabaseds on 127.0.0.1 and a free port; ``sqlite`` defaults to a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    db_file = sqlite or str(state_dir / "tango.sqlite")
    child = Child(
        "PyDatabaseds",
        [_bin("PyDatabaseds"), "--host", "127.0.0.1", "--port", "0", "--print-host-port", "2"],
        state_dir / "PyDatabaseds.log",
        env={"PYTANGO_DATABASE_NAME": db_file},
    )
    try:
        match = child.wait_for_line(r"port=(\d+)", timeout)
        tango_host = f"127.0.0.1:{match.group(1)}"
        wait_until(lambda: _db_answers(tango_host), timeout, "the Tango DB did not answer", child)
    except StartupError:
        child.stop()
        raise
    return TangoDb(tango_host, "pytango-db", [child])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpp_db_unavailable() -> str | None:
    """Why the C++ DataBaseds cannot run here (None when it can)."""
    if not CPP_DATABASEDS.exists():
        return f"{CPP_DATABASEDS} is missing (Debian package tango-db)"
    if not MARIADB.exists():
        return f"{MARIADB} is missing (Debian package mariadb-server)"
    if os.geteuid() != 0:
        return "starting a private MariaDB needs root"
    return None


def start_cpp_db(state_dir: Path, timeout: float = 40.0) -> TangoDb:
    """A private MariaDB (unix socket only) with the Tango schema, and DataBaseds on it."""
    reason = cpp_db_unavailable()
    if reason:
        raise StartupError(reason)
    state_dir = state_dir.resolve()
    data = state_dir / "mariadb"
    # DataBaseds finds MariaDB through the default socket (MYSQL_HOST=localhost).
    run = Path("/run/mysqld")
    for d in (data, run):
        d.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, "mysql", "mysql")
    shutil.chown(run, "mysql", "mysql")
    sock = run / "mysqld.sock"
    subprocess.run(
        [
            "mariadb-install-db",
            "--user=mysql",
            f"--datadir={data}",
            "--auth-root-authentication-method=socket",
        ],
        check=True,
        capture_output=True,
    )
    mariadb = Child(
        "mariadbd",
        [
            str(MARIADB),
            "--user=mysql",
            f"--datadir={data}",
            "--skip-networking",
            f"--socket={sock}",
            f"--pid-file={state_dir / 'mysqld.pid'}",
        ],
        state_dir / "mariadb.log",
    )
    db = TangoDb("", "cpp", [mariadb])
    try:
        wait_until(sock.exists, timeout, "MariaDB did not create its socket", mariadb)

        def sql(text: str, database: str = "") -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ["mariadb", "-uroot", f"--socket={sock}", *([database] if database else [])],
                input=text.encode(),
                capture_output=True,
            )

        wait_until(lambda: sql("SELECT 1").returncode == 0, timeout, "MariaDB did not answer")
        sql(
            "CREATE DATABASE tango; CREATE USER 'tango'@'localhost' IDENTIFIED BY 'tango';"
            "GRANT ALL PRIVILEGES ON tango.* TO 'tango'@'localhost'; FLUSH PRIVILEGES;"
        )
        loaded = sql(TANGO_SCHEMA.read_text(), "tango")
        if loaded.returncode != 0:
            raise StartupError(f"loading the Tango schema failed: {loaded.stderr.decode()}")
        port = free_port()
        databaseds = Child(
            "DataBaseds",
            [str(CPP_DATABASEDS), "2", "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"],
            state_dir / "DataBaseds.log",
            env={
                "MYSQL_USER": "tango",
                "MYSQL_PASSWORD": "tango",
                "MYSQL_HOST": "localhost",
                "MYSQL_DATABASE": "tango",
            },
        )
        db.children.append(databaseds)
        db.tango_host = f"127.0.0.1:{port}"
        wait_until(
            lambda: _db_answers(db.tango_host), timeout, "DataBaseds did not answer", databaseds
        )
    except BaseException:
        db.stop()
        raise
    return db
