"""System tier: a real Tango DB server, dsconfig registration, device servers as processes.

``tango_db`` runs every test module against each database kind: pytango-db's sqlite
``PyDatabaseds`` always, and the facility C++ ``DataBaseds`` on MariaDB where it can run
(installed by ``./dev.sh test`` as root; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tango

from tango_dranspose.deploy.database import (
    TangoDb,
    cpp_db_unavailable,
    start_cpp_db,
    start_pytango_db,
)
from tango_dranspose.deploy.processes import Child
from tango_dranspose.deploy.registration import register, servers
from tango_dranspose.deploy.servers import start_server, wait_for_devices

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", params=["pytango-db", "cpp-db"])
def tango_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TangoDb]:
    state = tmp_path_factory.mktemp(request.param)
    if request.param == "cpp-db":
        reason = cpp_db_unavailable()
        if reason:
            pytest.skip(f"C++ DataBaseds on MariaDB: {reason}")
        db = start_cpp_db(state)
    else:
        db = start_pytango_db(state, sqlite=str(state / "tango.sqlite"))
    yield db
    db.stop()


class Events:
    """Change events of one attribute, collected by a callback; wait on a condition of them."""

    def __init__(self, proxy: tango.DeviceProxy, attr: str) -> None:
        self.proxy = proxy
        self.attr = attr
        self.values: list[Any] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._id = proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, self._push)

    def _push(self, ev: Any) -> None:
        with self._cond:
            if ev.err:
                self.errors.append(str(ev.errors[0].desc) if ev.errors else "error")
            else:
                self.values.append(ev.attr_value.value)
            self._cond.notify_all()

    @property
    def last(self) -> Any:
        with self._cond:
            return self.values[-1] if self.values else None

    def wait(self, check: Callable[[Any], bool], timeout: float = 60.0) -> Any:
        """Until an event's value satisfies ``check`` (the first one counts too)."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for value in self.values[seen:]:
                    if check(value):
                        return value
                seen = len(self.values)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.proxy.name()}/{self.attr}: no event satisfied the condition "
                        f"within {timeout} s; values {self.values[-5:]}, errors {self.errors[-3:]}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        with contextlib.suppress(tango.DevFailed):
            self.proxy.unsubscribe_event(self._id)


class Suite:
    """A deployment registered with dsconfig and its servers, one process per server."""

    def __init__(self, db: TangoDb, config: dict[str, Any], state: Path) -> None:
        self.db = db
        self.config = config
        self.state = state
        self.children: dict[str, Child] = {}
        path = state / "deployment.json"
        path.write_text(json.dumps(config, indent=2))
        self.registration = register(path, db.tango_host)

    def start(self, only: str | None = None) -> None:
        started = []
        for server, instance, devices in servers(self.config):
            key = f"{server}/{instance}"
            if only is not None and key != only:
                continue
            child = start_server(server, instance, self.db.tango_host, self.state / "logs")
            self.children[key] = child
            started.append((child, devices))
        for child, devices in started:
            wait_for_devices(self.db.tango_host, devices, child, timeout=60)

    def proxy(self, device: str) -> tango.DeviceProxy:
        p = tango.DeviceProxy(f"tango://{self.db.tango_host}/{device}")
        p.set_timeout_millis(30_000)
        return p

    def put_properties(self, device: str, props: dict[str, Any]) -> None:
        db = tango.Database(*self.db.tango_host.split(":"))
        db.put_device_property(device, props)

    def stop(self) -> None:
        for child in self.children.values():
            child.stop()
        self.children.clear()
