"""Both Tango DB servers, pytango-db and the facility C++ DataBaseds, serve what the suite
needs: dsconfig registration, device properties, the wildcard queries of device discovery,
and a running demo deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from tango_dranspose.deploy.database import TangoDb
from tango_dranspose.deploy.processes import StartupError, wait_until
from tango_dranspose.deploy.registration import Registration, load_config, register, servers
from tests.system.conftest import REPO, Suite

DEMO = REPO / "tango-db" / "demo.json"
CONTROLLER = "demo/dranspose/controller"
WORKERS = ["demo/dranspose/worker-1", "demo/dranspose/worker-2"]


def database(tango_db: TangoDb) -> tango.Database:
    host, port = tango_db.tango_host.rsplit(":", 1)
    return tango.Database(host, int(port))


@pytest.fixture(scope="module")
def registered(tango_db: TangoDb) -> Iterator[tuple[Registration, Registration]]:
    """demo.json registered twice in a row, on a clean slate for its servers (the session DB
    is shared with other modules)."""
    db = database(tango_db)
    known = {str(s) for s in db.get_server_list("*")}
    for server, instance, _ in servers(load_config(DEMO)):
        if f"{server}/{instance}" in known:
            db.delete_server(f"{server}/{instance}")
    first = register(DEMO, tango_db.tango_host)
    second = register(DEMO, tango_db.tango_host)
    yield first, second


def test_registration_applies_once(registered: tuple[Registration, Registration]) -> None:
    first, second = registered
    assert first.changed and first.applied, first.diff
    assert not second.changed and not second.applied, second.diff


def test_registered_properties_read_back(
    tango_db: TangoDb, registered: tuple[Registration, Registration]
) -> None:
    db = database(tango_db)
    assert list(db.get_device_property(CONTROLLER, "Pipeline")["Pipeline"]) == ["demo"]
    props = db.get_device_property(WORKERS[0], ["Pipeline", "WorkerClass"])
    assert list(props["WorkerClass"]) == ["tango_dranspose.examples.roi:RoiWorker"]
    assert list(props["Pipeline"]) == ["demo"]
    assert db.get_class_for_device(WORKERS[1]) == "DransposeWorker"


def test_wildcard_device_query_finds_the_workers(
    tango_db: TangoDb, registered: tuple[Registration, Registration]
) -> None:
    # Device discovery asks for every device of a class with a wildcard server name.
    names = {str(n) for n in database(tango_db).get_device_name("*", "DransposeWorker")}
    assert set(WORKERS) <= names, names


def test_demo_controller_comes_on(
    tango_db: TangoDb, registered: tuple[Registration, Registration], tmp_path: Path
) -> None:
    suite = Suite(tango_db, load_config(DEMO), tmp_path)
    try:
        suite.start()
        controller = suite.proxy(CONTROLLER)
        try:
            wait_until(lambda: controller.state() == tango.DevState.ON, 60, "not ON")
        except StartupError as exc:
            pytest.fail(f"{CONTROLLER} on {tango_db.kind}: {exc}: {controller.status()}")
        # The controller counts the members discovery found: both workers, not just one.
        assert "2 workers" in controller.status(), controller.status()
    finally:
        suite.stop()
