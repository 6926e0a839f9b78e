"""``tango-dranspose register``: dsconfig files against a real Tango DB, and the files in tango-db/.

The command runs as a subprocess, as a beamline runs it. Every test registers its own device
names (``regtest/<test>/...``): the DB is shared by the whole session. dsconfig saves a backup
of the previous DB state on every write into the temporary directory; the tests point TMPDIR at
their own directory, so a backup there is also the evidence that something was written.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tango
from tango.server import device_property

from tango_dranspose.deploy.database import TangoDb, free_port
from tango_dranspose.deploy.registration import load_config, servers
from tango_dranspose.devices import discovery
from tango_dranspose.devices.controller import DransposeController
from tango_dranspose.devices.ingester import DransposeIngester, stream_configs
from tango_dranspose.devices.reducer import DransposeReducer
from tango_dranspose.devices.worker import DransposeWorker
from tango_dranspose.sources.upstream import open_upstream

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = sorted((REPO / "tango-db").glob("*.json"))
BEAMLINES = [p for p in DEPLOYMENTS if p.name.startswith("beamline-")]
DEVICE_CLASSES: dict[str, type] = {
    c.__name__: c
    for c in (DransposeController, DransposeIngester, DransposeWorker, DransposeReducer)
}
ERROR_PREFIX = "tango-dranspose register: error:"


# -- helpers ---------------------------------------------------------------------------------


def run_register(
    tmp_path: Path, *args: str, tango_host: str | None
) -> subprocess.CompletedProcess[str]:
    """``tango-dranspose register ARGS`` with TANGO_HOST (or none) and TMPDIR in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    if tango_host is not None:
        env["TANGO_HOST"] = tango_host
    backups = tmp_path / "tmp"
    backups.mkdir(exist_ok=True)
    env["TMPDIR"] = str(backups)
    return subprocess.run(
        [sys.executable, "-m", "tango_dranspose.cli", "register", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def backups(tmp_path: Path) -> list[Path]:
    """The DB backups dsconfig left, i.e. how many times it wrote."""
    return sorted((tmp_path / "tmp").glob("dsconfig-*.json"))


def database(db: TangoDb) -> tango.Database:
    host, port = db.tango_host.rsplit(":", 1)
    return tango.Database(host, int(port))


def defined(db: tango.Database, device: str, cls: str) -> bool:
    return device.lower() in {str(n).lower() for n in db.get_device_name("*", cls)}


def properties(db: tango.Database, device: str, names: list[str]) -> dict[str, list[str]]:
    found = db.get_device_property(device, names)
    return {name: [str(v) for v in found[name]] for name in names}


def deployment(name: str) -> dict[str, Any]:
    """A small pipeline with device names of its own: regtest/NAME/... and Pipeline NAME.

    Both workers live in one server instance, so that a file without one of them removes it
    (dsconfig removes devices only from the server instances the file names).
    """
    prefix = f"regtest/{name}"

    def server(cls: str, devices: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
        return {
            cls: {
                name: {
                    cls: {
                        f"{prefix}/{member}": {"properties": {"Pipeline": [name], **props}}
                        for member, props in devices.items()
                    }
                }
            }
        }

    worker = {"WorkerClass": ["tango_dranspose.examples.roi:RoiWorker"]}
    return {
        "servers": {
            **server("DransposeController", {"controller": {"Window": ["16"]}}),
            **server(
                "DransposeIngester",
                {
                    "camera": {
                        "Streams": ["camera"],
                        "Protocol": ["STINS"],
                        "UpstreamUrl": ["pull+tcp://10.0.0.5:9999"],
                    }
                },
            ),
            **server(
                "DransposeWorker",
                {
                    "worker-1": {**worker, "ListenHost": ["10.0.0.6"]},
                    "worker-2": {**worker, "Tags": ["debug"]},
                },
            ),
            **server(
                "DransposeReducer",
                {"reducer": {"ReducerClass": ["tango_dranspose.examples.roi:RoiReducer"]}},
            ),
        }
    }


def device_props(config: dict[str, Any], cls: str, device: str) -> dict[str, list[str]]:
    for instances in config["servers"].values():
        for classes in instances.values():
            if device in classes.get(cls, {}):
                props: dict[str, list[str]] = classes[cls][device]["properties"]
                return props
    raise KeyError(device)


def write(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config, indent=2))
    return path


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIX), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- against a real Tango DB -----------------------------------------------------------------


def test_dry_run_shows_the_diff_and_writes_nothing(tango_db: TangoDb, tmp_path: Path) -> None:
    config = deployment("dryrun")
    path = write(tmp_path, "dryrun.json", config)
    # --tango-host instead of the environment variable
    proc = run_register(
        tmp_path, str(path), "--dry-run", "--tango-host", tango_db.tango_host, tango_host=None
    )
    assert proc.returncode == 0, proc.stderr
    assert "+ Device: regtest/dryrun/controller" in proc.stdout
    assert "+ Device: regtest/dryrun/worker-2" in proc.stdout
    assert "pull+tcp://10.0.0.5:9999" in proc.stdout
    assert "dry run, nothing written" in proc.stdout
    db = database(tango_db)
    for member, cls in (("controller", "DransposeController"), ("worker-1", "DransposeWorker")):
        assert not defined(db, f"regtest/dryrun/{member}", cls)
    assert properties(db, "regtest/dryrun/camera", ["Streams"]) == {"Streams": []}
    assert backups(tmp_path) == []


def test_apply_writes_the_properties_and_a_second_run_changes_nothing(
    tango_db: TangoDb, tmp_path: Path
) -> None:
    config = deployment("apply")
    path = write(tmp_path, "apply.json", config)
    proc = run_register(tmp_path, str(path), tango_host=tango_db.tango_host)
    assert proc.returncode == 0, proc.stderr
    assert "+ Device: regtest/apply/camera" in proc.stdout
    assert f"applied to the Tango DB at {tango_db.tango_host}" in proc.stdout
    assert len(backups(tmp_path)) == 1

    db = database(tango_db)
    for server, instance, devices in servers(config):
        for device in devices:
            info = db.get_device_info(device)
            assert info.ds_full_name == f"{server}/{instance}"
            assert info.class_name == server  # executables are named like their class
            expected = device_props(config, server, device)
            assert properties(db, device, list(expected)) == expected
    assert discovery.members(db, "apply") == {
        "controller": ["regtest/apply/controller"],
        "ingester": ["regtest/apply/camera"],
        "worker": ["regtest/apply/worker-1", "regtest/apply/worker-2"],
        "reducer": ["regtest/apply/reducer"],
    }

    again = run_register(tmp_path, str(path), tango_host=tango_db.tango_host)
    assert again.returncode == 0, again.stderr
    assert "No changes needed" in again.stdout
    assert f"the Tango DB at {tango_db.tango_host} already matches" in again.stdout
    assert len(backups(tmp_path)) == 1


def test_a_changed_file_shows_and_applies_the_difference(tango_db: TangoDb, tmp_path: Path) -> None:
    v1 = deployment("change")
    first = run_register(
        tmp_path, str(write(tmp_path, "v1.json", v1)), tango_host=tango_db.tango_host
    )
    assert first.returncode == 0, first.stderr
    v2 = copy.deepcopy(v1)
    workers = v2["servers"]["DransposeWorker"]["change"]["DransposeWorker"]
    del workers["regtest/change/worker-2"]
    workers["regtest/change/worker-1"]["properties"]["Tags"] = ["generic", "debug"]
    device_props(v2, "DransposeController", "regtest/change/controller")["Window"] = ["64"]
    path = write(tmp_path, "v2.json", v2)
    db = database(tango_db)

    dry = run_register(tmp_path, str(path), "--dry-run", tango_host=tango_db.tango_host)
    assert dry.returncode == 0, dry.stderr
    assert "- Device: regtest/change/worker-2" in dry.stdout
    assert "= Device: regtest/change/worker-1" in dry.stdout
    assert "Tags" in dry.stdout
    assert "Window" in dry.stdout
    assert "dry run, nothing written" in dry.stdout
    assert defined(db, "regtest/change/worker-2", "DransposeWorker")
    assert properties(db, "regtest/change/controller", ["Window"]) == {"Window": ["16"]}

    applied = run_register(tmp_path, str(path), tango_host=tango_db.tango_host)
    assert applied.returncode == 0, applied.stderr
    assert "- Device: regtest/change/worker-2" in applied.stdout
    assert "applied to the Tango DB" in applied.stdout
    assert not defined(db, "regtest/change/worker-2", "DransposeWorker")
    assert properties(db, "regtest/change/worker-1", ["Tags"]) == {"Tags": ["generic", "debug"]}
    assert properties(db, "regtest/change/controller", ["Window"]) == {"Window": ["64"]}
    assert discovery.members(db, "change")["worker"] == ["regtest/change/worker-1"]


def test_update_keeps_properties_the_file_no_longer_names(
    tango_db: TangoDb, tmp_path: Path
) -> None:
    v1 = deployment("update")
    first = run_register(
        tmp_path, str(write(tmp_path, "v1.json", v1)), tango_host=tango_db.tango_host
    )
    assert first.returncode == 0, first.stderr
    v2 = copy.deepcopy(v1)
    del device_props(v2, "DransposeWorker", "regtest/update/worker-1")["ListenHost"]
    path = write(tmp_path, "v2.json", v2)
    db = database(tango_db)

    kept = run_register(tmp_path, str(path), "--update", tango_host=tango_db.tango_host)
    assert kept.returncode == 0, kept.stderr
    assert "already matches" in kept.stdout
    assert properties(db, "regtest/update/worker-1", ["ListenHost"]) == {"ListenHost": ["10.0.0.6"]}

    removed = run_register(tmp_path, str(path), tango_host=tango_db.tango_host)
    assert removed.returncode == 0, removed.stderr
    assert "ListenHost" in removed.stdout
    assert "applied to the Tango DB" in removed.stdout
    assert properties(db, "regtest/update/worker-1", ["ListenHost"]) == {"ListenHost": []}


def test_the_beamline_deployments_register_side_by_side(tango_db: TangoDb, tmp_path: Path) -> None:
    """Several pipelines in one DB: each file's devices form their own pipeline."""
    db = database(tango_db)
    for path in BEAMLINES:
        proc = run_register(tmp_path, str(path), tango_host=tango_db.tango_host)
        assert proc.returncode == 0, proc.stderr
        assert "applied to the Tango DB" in proc.stdout or "already matches" in proc.stdout
    for path in BEAMLINES:
        config = load_config(path)
        (pipeline,) = pipelines(config)
        members = discovery.members(db, pipeline)
        expected: dict[str, list[str]] = {kind: [] for kind in discovery.CLASSES}
        for server, _, devices in servers(config):
            kind = next(k for k, c in discovery.CLASSES.items() if c == server)
            expected[kind] += devices
        assert members == {k: sorted(v) for k, v in expected.items()}
        assert discovery.find_controller(db, pipeline) in members["controller"]


# -- mistakes: one line on stderr, exit status 2 (no DB needed) -----------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("servers:\n  DransposeWorker: {}\n", "is not valid JSON"),
        ('{"servers": {"DransposeWorker": {}}', "is not valid JSON"),
        ('{"classes": {}}', 'needs a "servers" object'),
        ('{"servers": []}', 'needs a "servers" object'),
        ("[1, 2]", 'needs a "servers" object'),
        (None, "cannot read"),
    ],
    ids=["yaml", "truncated", "no-servers", "servers-list", "list", "missing"],
)
def test_a_bad_file_gives_one_line_and_status_2(
    tmp_path: Path, content: str | None, words: str
) -> None:
    path = tmp_path / "deployment.json"
    if content is not None:
        path.write_text(content)
    # The file is refused before dsconfig would try the (unreachable) DB.
    proc = run_register(tmp_path, str(path), tango_host=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert words in line
    assert str(path) in line
    assert proc.stdout == ""


def test_no_tango_host_gives_status_2(tmp_path: Path) -> None:
    path = write(tmp_path, "nohost.json", deployment("nohost"))
    proc = run_register(tmp_path, str(path), tango_host=None)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "TANGO_HOST" in line
    assert "--tango-host" in line
    assert backups(tmp_path) == []


def test_an_unreachable_db_is_status_1_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "nodb.json", deployment("nodb"))
    proc = run_register(tmp_path, str(path), tango_host=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1  # the command's help: "1 dsconfig failed"
    assert "Traceback" not in proc.stderr
    assert "Failed to connect to database" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- the files in tango-db/ (no DB) ----------------------------------------------------------


def pipelines(config: dict[str, Any]) -> set[str]:
    out = set()
    for instances in config["servers"].values():
        for classes in instances.values():
            for devices in classes.values():
                for spec in devices.values():
                    out.add(spec.get("properties", {}).get("Pipeline", ["default"])[0])
    return out


def declared_properties(cls: type) -> dict[str, device_property]:
    return {k: v for k, v in vars(cls).items() if isinstance(v, device_property)}


def test_there_are_example_deployments() -> None:
    names = {p.name for p in DEPLOYMENTS}
    assert {
        "demo.json",
        "beamline-camera-panda-sardana.json",
        "beamline-eiger-xspress3-contrast.json",
    } <= names


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=[p.name for p in DEPLOYMENTS])
def test_deployment_file_is_consistent(path: Path) -> None:
    config = load_config(path)
    assert servers(config), "no server instances"
    assert len(pipelines(config)) == 1, f"devices of several pipelines: {pipelines(config)}"
    seen: set[str] = set()
    kinds: set[str] = set()
    for server, instances in config["servers"].items():
        assert server in DEVICE_CLASSES, f"unknown server {server}"
        for instance, classes in instances.items():
            assert set(classes) == {server}, f"{server}/{instance}: classes {set(classes)}"
            for device, spec in classes[server].items():
                assert device.count("/") == 2, f"{device}: not domain/family/member"
                assert device.lower() not in seen, f"{device} twice"
                seen.add(device.lower())
                kinds.add(server)
                check_device(server, device, spec.get("properties", {}))
    assert kinds == set(DEVICE_CLASSES), f"{path.name} lacks {set(DEVICE_CLASSES) - kinds}"


def check_device(cls: str, device: str, props: dict[str, Any]) -> None:
    declared = declared_properties(DEVICE_CLASSES[cls])
    for name, values in props.items():
        assert name in declared, f"{device}: {cls} has no property {name}"
        assert isinstance(values, list), f"{device}/{name}: dsconfig values are lists"
        assert all(isinstance(v, str) for v in values), f"{device}/{name}: not strings"
        if name in ("ControlPort", "Window"):
            assert int(values[0]) >= 0
        if name == "EventPeriod":
            assert float(values[0]) > 0
    for name, prop in declared.items():
        if prop.mandatory:
            assert props.get(name), f"{device}: mandatory property {name} missing"
    if cls == "DransposeIngester":
        configs = stream_configs(
            props["Streams"], props.get("Protocol", [""])[0], props.get("UpstreamUrl", [""])[0]
        )
        for stream in configs:
            open_upstream(stream.upstream)  # known scheme and options (nothing is opened)
    for name in ("WorkerClass", "ReducerClass"):
        if name in props:
            (spec,) = props[name]
            module, sep, attr = spec.partition(":")
            assert sep and module and attr, f"{device}: {name} {spec!r} is not module:Class"
            assert all(p.isidentifier() for p in (*module.split("."), *attr.split("."))), spec
