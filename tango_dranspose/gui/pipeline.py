"""A pipeline's devices, found in the Tango DB, and the reducer's list of published values.

No Qt here: the ``gui`` command resolves the pipeline (and fails with one line) before any
window opens, and the TaurusGui config module (``taurus_gui/config.py``) resolves it again
from the environment the command sets.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tango_dranspose.devices.discovery import CLASSES, pipeline_of

if TYPE_CHECKING:
    import tango

ENV_PIPELINE = "TANGO_DRANSPOSE_PIPELINE"
ENV_TANGO_HOST = "TANGO_HOST"


class GuiError(Exception):
    """What keeps the GUI from opening, in one line a user can act on."""


@dataclass(frozen=True)
class Pipeline:
    """The devices of one pipeline (plain Tango names) and the DB they are registered in."""

    tango_host: str
    name: str
    controller: str
    ingesters: list[str] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    reducers: list[str] = field(default_factory=list)

    def full(self, device: str) -> str:
        """Taurus model name of a device (or ``device/attribute``) of this pipeline."""
        return f"tango://{self.tango_host}/{device}"

    @property
    def reducer(self) -> str | None:
        return self.reducers[0] if self.reducers else None

    @property
    def services(self) -> list[str]:
        return [*self.ingesters, *self.workers, *self.reducers]


@dataclass(frozen=True)
class Published:
    """One entry of the reducer's ``Results``: ``tree/path -> AttrName (kind dtype)``."""

    path: str
    attribute: str
    kind: str  # scalar | spectrum | image
    dtype: str

    @property
    def numeric(self) -> bool:
        return self.dtype not in ("str", "bool")


_RESULT = re.compile(r"^(?P<path>.+?) -> (?P<attr>\S+) \((?P<kind>\w+) (?P<dtype>\w+)\)$")


def parse_results(lines: list[str] | tuple[str, ...]) -> tuple[list[Published], list[str]]:
    """The published values that are attributes, and the other lines (values that are not
    attributes, with the reducer's reason), in the order the reducer lists them."""
    values: list[Published] = []
    others: list[str] = []
    for line in lines:
        m = _RESULT.match(str(line).strip())
        if m and m["kind"] in ("scalar", "spectrum", "image"):
            values.append(Published(m["path"], m["attr"], m["kind"], m["dtype"]))
        elif str(line).strip():
            others.append(str(line).strip())
    return values, others


def split_host(tango_host: str) -> tuple[str, int]:
    host, sep, port = tango_host.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise GuiError(f"TANGO_HOST {tango_host!r} is not HOST:PORT")
    return host, int(port)


def check_reachable(tango_host: str, timeout: float = 3.0) -> None:
    """Fail fast with the reason when nothing listens at the DB's address (the Tango client
    would otherwise wait for its own timeouts and answer with a CORBA trace)."""
    host, port = split_host(tango_host)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise GuiError(f"cannot reach the Tango DB at {tango_host}: {reason}") from None


def _database(tango_host: str) -> tango.Database:
    import tango

    host, port = split_host(tango_host)
    try:
        db = tango.Database(host, port)
        db.get_info()
    except tango.DevFailed as exc:
        desc = exc.args[0].desc.strip().splitlines()[0] if exc.args else str(exc)
        raise GuiError(f"the Tango DB at {tango_host} does not answer: {desc}") from None
    return db


def list_pipelines(tango_host: str) -> dict[str, dict[str, list[str]]]:
    """Every pipeline registered in the DB: name -> kind -> device names (sorted)."""
    check_reachable(tango_host)
    db = _database(tango_host)
    out: dict[str, dict[str, list[str]]] = {}
    for kind, cls in CLASSES.items():
        for device in sorted(str(n) for n in db.get_device_name("*", cls)):
            name = pipeline_of(db, device)
            out.setdefault(name, {k: [] for k in CLASSES})[kind].append(device)
    return out


def resolve(tango_host: str | None, name: str | None = None) -> Pipeline:
    """The pipeline ``name`` (default: the only one in the DB); GuiError says what is wrong."""
    if not tango_host:
        raise GuiError("no Tango DB: set TANGO_HOST or pass --tango-host HOST:PORT")
    found = list_pipelines(tango_host)
    names = ", ".join(sorted(found)) or "none"
    if name is None:
        if not found:
            raise GuiError(
                f"no tango-dranspose devices in the Tango DB at {tango_host} "
                "(register a deployment first: tango-dranspose register FILE.json)"
            )
        if len(found) > 1:
            raise GuiError(
                f"several pipelines in the Tango DB at {tango_host}: {names}; "
                "choose one with --pipeline NAME"
            )
        name = next(iter(found))
    if name not in found:
        raise GuiError(f"no pipeline {name!r} in the Tango DB at {tango_host} (pipelines: {names})")
    devices = found[name]
    if len(devices["controller"]) != 1:
        what = ", ".join(devices["controller"]) or "no DransposeController device"
        raise GuiError(f"pipeline {name!r} needs exactly one controller; it has {what}")
    return Pipeline(
        tango_host=tango_host,
        name=name,
        controller=devices["controller"][0],
        ingesters=devices["ingester"],
        workers=devices["worker"],
        reducers=devices["reducer"],
    )


def from_env() -> Pipeline:
    """The pipeline the ``gui`` command chose (``TANGO_DRANSPOSE_PIPELINE``, ``TANGO_HOST``);
    without a pipeline name, the only one in the DB."""
    return resolve(os.environ.get(ENV_TANGO_HOST), os.environ.get(ENV_PIPELINE) or None)
