"""Finding the devices of one pipeline through the Tango DB.

All devices of the four classes whose ``Pipeline`` property has the same value form a
pipeline. The controller publishes the address of its scheduler as the ``ControlAddress``
attribute; the other devices read it to connect their service.
"""

from __future__ import annotations

import tango

CLASSES = {
    "controller": "DransposeController",
    "ingester": "DransposeIngester",
    "worker": "DransposeWorker",
    "reducer": "DransposeReducer",
}
DEFAULT_PIPELINE = "default"


def pipeline_of(db: tango.Database, device: str) -> str:
    values = db.get_device_property(device, "Pipeline")["Pipeline"]
    return str(values[0]) if values else DEFAULT_PIPELINE


def members(db: tango.Database, pipeline: str) -> dict[str, list[str]]:
    """Every device defined in the DB for ``pipeline``, by kind (whether running or not)."""
    out: dict[str, list[str]] = {}
    for kind, cls in CLASSES.items():
        names = sorted(str(n) for n in db.get_device_name("*", cls))
        out[kind] = [n for n in names if pipeline_of(db, n) == pipeline]
    return out


def find_controller(db: tango.Database, pipeline: str) -> str:
    """The controller device of ``pipeline``; raises LookupError saying what is wrong."""
    controllers = members(db, pipeline)["controller"]
    if not controllers:
        raise LookupError(
            f"no DransposeController device has Pipeline={pipeline!r} in the Tango DB"
        )
    if len(controllers) > 1:
        raise LookupError(
            f"several controllers have Pipeline={pipeline!r}: {', '.join(controllers)}"
        )
    return controllers[0]


def control_address(controller: str, timeout_ms: int = 3000) -> str:
    """The scheduler endpoint the controller device publishes (raises DevFailed if it is down)."""
    proxy = tango.DeviceProxy(controller)
    proxy.set_timeout_millis(timeout_ms)
    address = str(proxy.read_attribute("ControlAddress").value)
    if not address:
        raise LookupError(f"{controller} has no control address (it is in FAULT)")
    return address
