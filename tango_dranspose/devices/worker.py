"""DransposeWorker: runs the user's worker class on the events assigned to it."""

from __future__ import annotations

from typing import Any

from tango import DevState
from tango.server import device_property

from tango_dranspose.core.payload import load_class
from tango_dranspose.devices.attrs import snap
from tango_dranspose.devices.base import Snapshot
from tango_dranspose.devices.service import DataServiceDevice, ScanErrors
from tango_dranspose.runtime.worker import WorkerService


class DransposeWorker(DataServiceDevice):
    """Runs ``process_event`` of the worker class on assigned events, on its own thread."""

    WorkerClass = device_property(
        dtype=str, default_value="", doc="The worker payload, 'package.module:Class'"
    )
    Tags = device_property(
        dtype=(str,),
        default_value=["generic"],
        doc="Tags of this worker; trigger maps address workers by tag (e.g. 'debug')",
    )
    PayloadPath = device_property(
        dtype=(str,),
        default_value=[],
        doc="Extra directories to import the payload module from",
    )

    pushed = (
        "ProcessedEvents",
        "Errors",
        "LastError",
        "ProcessingTimeMean",
        "ProcessingTimeP99",
        "Load",
        "PendingEvents",
    )

    ProcessedEvents = snap("ProcessedEvents", "int64", "Events processed since the server started")
    Errors = snap("Errors", "int64", "Exceptions raised by process_event since the server started")
    LastError = snap("LastError", str, "The last exception of the payload, with its event")
    ProcessingTimeMean = snap("ProcessingTimeMean", float, "Mean time per event", unit="ms")
    ProcessingTimeP99 = snap(
        "ProcessingTimeP99", float, "99th percentile time per event", unit="ms"
    )
    Load = snap(
        "Load",
        float,
        "Share of time spent in process_event",
        unit="%",
        min_value=0,
        max_value=100,
    )
    PendingEvents = snap("PendingEvents", "int64", "Events assigned and not yet processed")

    def check_config(self) -> None:
        if not self.WorkerClass:
            raise ValueError("the WorkerClass property is not set (e.g. mypackage.module:Class)")
        load_class(self.WorkerClass, list(self.PayloadPath))  # a wrong class is a FAULT now
        self._errors = ScanErrors()

    def make_service(self, scheduler: str) -> WorkerService:
        return WorkerService(
            self.get_name(),
            scheduler,
            self.WorkerClass,
            tags=list(self.Tags) or ["generic"],
            bind=self.data_bind(),
            search=list(self.PayloadPath),
        )

    def collect_service(self, svc: Any) -> Snapshot:
        c = svc.counters()
        values = {
            "ProcessedEvents": int(c["processed"]),
            "Errors": int(c["errors"]),
            "LastError": c["last_error"] or "",
            "ProcessingTimeMean": float(c["mean_ms"]),
            "ProcessingTimeP99": float(c["p99_ms"]),
            "Load": 100.0 * float(c["load"]),
            "PendingEvents": int(c["pending"]),
        }
        scan_errors = self._errors.count(svc.scan, int(c["errors"]))
        cls = self.WorkerClass
        if svc.scan_active:
            state, text = DevState.RUNNING, f"Processing a scan with {cls}: "
        else:
            state, text = DevState.ON, f"Idle, ready ({cls}): "
        text += f"{c['processed']} events processed since start, load {values['Load']:.0f}%."
        if scan_errors:
            state = DevState.ALARM
            text += f" {scan_errors} events failed in this scan; last: {c['last_error']}"
        return Snapshot(state, text, values)
