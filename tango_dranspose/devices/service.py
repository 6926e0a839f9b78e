"""Base of the ingester, worker and reducer devices: find the controller, run one service.

The device looks up its pipeline's controller in the Tango DB, reads the scheduler's address
from it and starts its runtime service against it. When the scheduler stops answering, the
device looks again (every ``LOOKUP_PERIOD`` seconds) and reconnects if the controller came back
elsewhere; on the same address ZeroMQ reconnects by itself and the service introduces itself
again.
"""

from __future__ import annotations

import time
from typing import Any

import tango
from tango import DevState
from tango.server import device_property

from tango_dranspose.devices import discovery
from tango_dranspose.devices.base import PipelineDevice, Snapshot
from tango_dranspose.runtime.service import Service

LOOKUP_PERIOD = 2.0
PATIENCE = 5.0  # seconds a new connection may take before the device looks again


def _reason(exc: Exception) -> str:
    if isinstance(exc, tango.DevFailed) and exc.args:
        return str(exc.args[0].desc).strip()
    return str(exc)


class ServiceDevice(PipelineDevice):
    def start_runtime(self) -> None:
        self._service: Any = None
        self._address = ""
        self._connected_at = 0.0
        self._lookup_at = 0.0
        self._lookup_error = "looking it up in the Tango DB"
        self.check_config()
        self._wake.set()  # look for the controller at once

    # -- for subclasses --------------------------------------------------------------------

    def check_config(self) -> None:
        """Raise ValueError on properties that cannot work (the device goes to FAULT)."""

    def make_service(self, scheduler: str) -> Service:
        raise NotImplementedError

    def collect_service(self, service: Any) -> Snapshot:
        raise NotImplementedError

    # -- connection ------------------------------------------------------------------------

    def periodic(self) -> None:
        if self._fault is not None:
            return
        svc = self._service
        now = time.monotonic()
        if svc is not None and (svc.scheduler_reachable or now - self._connected_at < PATIENCE):
            return
        if now - self._lookup_at < LOOKUP_PERIOD:
            return
        self._lookup_at = now
        try:
            controller = discovery.find_controller(tango.Database(), self.Pipeline)
            address = discovery.control_address(controller)
        except (LookupError, tango.DevFailed) as exc:
            self._lookup_error = _reason(exc)
            return
        if svc is not None and address == self._address:
            return
        self.info_stream(f"connecting to {controller} at {address}")
        self.run(self._connect(address))

    async def _connect(self, address: str) -> None:
        if self._service is not None:
            old, self._service = self._service, None
            await old.close()
        svc = self.make_service(address)
        svc.on_change = self.changed
        await svc.start()
        self._service = svc
        self._address = address
        self._connected_at = time.monotonic()

    async def stop_runtime(self) -> None:
        svc = getattr(self, "_service", None)
        if svc is not None:
            self._service = None
            await svc.close()

    def state_key(self) -> Any:
        svc = self._service
        if svc is None:
            return None
        return (id(svc), svc.scan_active, svc.last_heard is None)

    def collect(self) -> Snapshot:
        svc = self._service
        if svc is None:
            return Snapshot(
                DevState.INIT,
                f"Waiting for the controller of pipeline {self.Pipeline!r}: {self._lookup_error}.",
                {},
            )
        snap = self.collect_service(svc)
        if svc.last_heard is None:
            return Snapshot(
                DevState.INIT, f"Connecting to the controller at {self._address}.", snap.values
            )
        if not svc.scheduler_reachable:
            return Snapshot(
                DevState.ALARM,
                f"The controller at {self._address} does not answer; looking for it again.",
                snap.values,
            )
        return snap


class DataServiceDevice(ServiceDevice):
    """A component that receives data (workers, the reducer): where it listens."""

    ListenHost = device_property(
        dtype=str,
        default_value="127.0.0.1",
        doc="Interface to receive data on: a host name or address the other components can "
        "reach when they run on other hosts, or 0.0.0.0 for all interfaces (the host's name "
        "is then announced).",
    )
    DataPort = device_property(
        dtype=int,
        default_value=0,
        doc="TCP port to receive data on (0: any free port; set one for firewalled networks).",
    )

    def data_bind(self) -> str:
        return f"tcp://{self.ListenHost}:{self.DataPort}"


class ScanErrors:
    """Errors of the current or last scan, from a counter that runs over the process's life."""

    def __init__(self) -> None:
        self.scan: Any = None
        self.base = 0

    def count(self, scan: Any, total: int) -> int:
        if scan is not self.scan:
            self.scan, self.base = scan, total
        return total - self.base
