"""DransposeWorker: runs the user's worker class on the events assigned to it."""

from __future__ import annotations

from typing import Any

import numpy as np
from tango import AttrWriteType, DevState
from tango.server import attribute, device_property

from tango_dranspose.core.payload import enter_payload_root, load_class
from tango_dranspose.core.publishview import base_name
from tango_dranspose.devices.attrs import array_format, snap
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
    DebugEvents = device_property(
        dtype=int,
        default_value=-1,
        doc="Events to keep for the debug view (attributes debug_STREAM and "
        "debug_STREAM_text); -1: 10 when Tags has 'debug', else none",
    )

    _debug_choice: int = -1

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
    DebugEventNumbers = snap(
        "DebugEventNumbers", ("int64",), "Debug view: the events kept (oldest first)"
    )

    @attribute(
        dtype="int64",
        access=AttrWriteType.READ_WRITE,
        doc="Debug view: the event shown in debug_* (-1: the latest kept)",
    )
    def DebugEvent(self) -> int:
        return int(self._debug_choice)

    @DebugEvent.write  # type: ignore[no-redef]
    def DebugEvent(self, value: int) -> None:
        self._debug_choice = int(value)
        self.refresh_now()

    def keep_last(self) -> int:
        if int(self.DebugEvents) >= 0:
            return int(self.DebugEvents)
        return 10 if "debug" in list(self.Tags) else 0

    def check_config(self) -> None:
        self._debug_choice = -1
        self._debug_attrs: dict[str, tuple[str, str]] = {}  # name -> (kind, dtype)
        if not self.WorkerClass:
            raise ValueError("the WorkerClass property is not set (e.g. mypackage.module:Class)")
        load_class(self.WorkerClass, list(self.PayloadPath))  # a wrong class is a FAULT now
        self._errors = ScanErrors()

    def make_service(self, scheduler: str) -> WorkerService:
        service = WorkerService(
            self.get_name(),
            scheduler,
            self.WorkerClass,
            tags=list(self.Tags) or ["generic"],
            bind=self.data_bind(),
            search=list(self.PayloadPath),
            keep_last=self.keep_last(),
        )
        # Payloads open data files relative to their repository, as under dranspose (a
        # server with several payload devices runs in the last one's).
        enter_payload_root(service.cls)
        return service

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
        if svc.debug is not None:
            values.update(self._debug_values(svc.debug.snapshot()))
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

    # -- debug view ------------------------------------------------------------------------

    def _debug_values(self, kept: list[Any]) -> dict[str, Any]:
        values: dict[str, Any] = {"DebugEventNumbers": [e.event for e in kept]}
        if not kept:
            return values
        shown = kept[-1]
        for e in kept:
            if e.event == self._debug_choice:
                shown = e
        for stream, view in shown.streams.items():
            name = f"debug_{base_name(stream)}"
            values[f"{name}_text"] = f"event {shown.event}: {view.text}"
            if view.array is not None:
                values[name] = view.array
        return values

    def before_push(self, snap: Snapshot) -> None:
        for name, value in snap.values.items():
            if not name.startswith("debug_"):
                continue
            if isinstance(value, np.ndarray):
                shape = ("image" if value.ndim == 2 else "spectrum", str(value.dtype))
            else:
                shape = ("scalar", "str")
            if self._debug_attrs.get(name) == shape:
                continue
            if name in self._debug_attrs:
                self.remove_attribute(name)
            self.add_attribute(_debug_attribute(name, *shape, self._read_debug))
            self.set_change_event(name, True, False)
            self._debug_attrs[name] = shape

    def dynamic_pushed(self) -> tuple[str, ...]:
        return tuple(self._debug_attrs)

    def _read_debug(self, attr: Any) -> Any:
        value = self.value(attr.get_name())
        if value is None:
            raise ValueError(f"{attr.get_name()}: this stream is not in the event shown")
        return value


def _debug_attribute(name: str, kind: str, dtype: str, fget: Any) -> attribute:
    return attribute(
        name=name,
        dtype=str if kind == "scalar" else dtype,
        access=AttrWriteType.READ,
        fget=fget,
        doc="Debug view: the stream's frame (image or spectrum) or its message as text",
        **array_format(kind),
    )
