"""Tango database servers: the embedded pytango-db (sqlite) and the facility C++ DataBaseds.

``start_pytango_db`` runs pytango-db's ``PyDatabaseds`` on a free port with its sqlite file
under a state directory. ``start_cpp_db`` runs Debian's ``DataBaseds`` (package ``tango-db``)
on a private MariaDB (``mariadb-server``), as facilities run it; the MariaDB data and its
socket live in the state directory too: no root needed, and no meeting a system MariaDB.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tango_dranspose.deploy.processes import Child, StartupError, wait_until

CPP_DATABASEDS = Path("/usr/lib/tango/DataBaseds")
MARIADB = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")
MARIADB_CLIENT = Path("/usr/bin/mariadb")
TANGO_SCHEMA = Path("/usr/share/dbconfig-common/data/tango-db/install/mysql")
# sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107


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
    missing = [
        str(path)
        for path in (CPP_DATABASEDS, MARIADB, MARIADB_INSTALL_DB, MARIADB_CLIENT, TANGO_SCHEMA)
        if not path.exists()
    ]
    if missing:
        return f"{', '.join(missing)} missing (Debian packages mariadb-server tango-db)"
    return None


def start_cpp_db(state_dir: Path, timeout: float = 40.0) -> TangoDb:
    """A private MariaDB (unix socket only) with the Tango schema, and DataBaseds on it.

    The MariaDB data stays in ``state_dir``: a second start on the same directory reuses
    the registrations, as ``start_pytango_db`` does with its sqlite file.
    """
    reason = cpp_db_unavailable()
    if reason:
        raise StartupError(reason)
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    data = state_dir / "mariadb"
    # A private socket rather than the Debian default /run/mysqld/mysqld.sock: a system
    # MariaDB, another test session or a leftover of a killed run may hold the default one,
    # and we could neither share it nor safely kill its owner. --no-defaults keeps the
    # server's settings out of /etc/mysql for the same reason.
    sock = state_dir / "mysqld.sock"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        raise StartupError(f"{sock}: too long for a unix socket; use a shorter state directory")
    # DataBaseds has no socket setting and its client library prefers the socket of the
    # option files (/etc/mysql/my.cnf names the default one) over MYSQL_UNIX_PORT. The file
    # in $MARIADB_HOME is read after /etc and wins; only ~/.my.cnf comes later, hence HOME.
    (state_dir / "my.cnf").write_text(f"[client]\nsocket={sock}\n")
    user = pwd.getpwuid(os.geteuid()).pw_name
    # mariadbd refuses to run as root unless told so; as root it must, because state
    # directories such as pytest's are private to root and the mysql user cannot enter them.
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    if not (data / "mysql").is_dir():
        installed = subprocess.run(
            [
                str(MARIADB_INSTALL_DB),
                "--no-defaults",
                *as_user,
                f"--datadir={data}",
                "--auth-root-authentication-method=socket",
                f"--auth-root-socket-user={user}",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if installed.returncode != 0:
            raise StartupError(
                f"mariadb-install-db failed (status {installed.returncode}):\n"
                f"{(installed.stdout + installed.stderr)[-2000:]}"
            )

    def sql(text: str, database: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(MARIADB_CLIENT),
                "--no-defaults",
                f"--socket={sock}",
                f"--user={user}",
                "--batch",
                "--skip-column-names",
                *([database] if database else []),
            ],
            input=text,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def must(result: subprocess.CompletedProcess[str], what: str) -> str:
        if result.returncode != 0:
            raise StartupError(f"{what} failed: {result.stderr.strip()}")
        return result.stdout

    # What answers here is a leftover of a killed start on this directory or a start still
    # in use; refused, not killed, since it may be the latter.
    if sock.exists() and sql("SELECT 1").returncode == 0:
        pid_file = state_dir / "mysqld.pid"
        pid = pid_file.read_text().strip() if pid_file.exists() else "unknown"
        raise StartupError(
            f"a MariaDB (pid {pid}) already serves {data}: stop it, or use another state directory"
        )
    mariadb = Child(
        "mariadbd",
        [
            str(MARIADB),
            "--no-defaults",
            *as_user,
            f"--datadir={data}",
            "--skip-networking",
            f"--socket={sock}",
            f"--pid-file={state_dir / 'mysqld.pid'}",
        ],
        state_dir / "mariadb.log",
    )
    db = TangoDb("", "cpp", [mariadb])
    try:
        # A stale socket file of a killed earlier run may be there: only an answer counts
        # (mariadbd replaces the file).
        wait_until(
            lambda: sql("SELECT 1").returncode == 0, timeout, "MariaDB did not answer", mariadb
        )
        if not must(sql("SHOW DATABASES LIKE 'tango'"), "listing the databases").strip():
            must(
                sql(
                    "CREATE DATABASE tango;"
                    "CREATE USER IF NOT EXISTS 'tango'@'localhost' IDENTIFIED BY 'tango';"
                    "GRANT ALL PRIVILEGES ON tango.* TO 'tango'@'localhost'; FLUSH PRIVILEGES;"
                ),
                "creating the tango database",
            )
            must(sql(TANGO_SCHEMA.read_text(), "tango"), f"loading the Tango schema {TANGO_SCHEMA}")
        port = free_port()
        databaseds = Child(
            "DataBaseds",
            [str(CPP_DATABASEDS), "2", "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"],
            state_dir / "DataBaseds.log",
            env={
                "MARIADB_HOME": str(state_dir),
                "HOME": str(state_dir),
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
