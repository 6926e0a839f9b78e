"""DransposeReducer: reduces the workers' results in order; the publish tree's scalars become
attributes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType, DevState
from tango.server import attribute, device_property

from tango_dranspose.core.payload import load_class
from tango_dranspose.devices.attrs import snap
from tango_dranspose.devices.base import Snapshot
from tango_dranspose.devices.service import DataServiceDevice, ScanErrors
from tango_dranspose.runtime.reducer import ReducerService

RESERVED = {"state", "status", "init"}


def scalar_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every number, bool and string in a publish tree.

    Keys starting with ``_`` and ``NAME_attrs`` entries (HDF5 attributes of ``NAME``, in the
    dranspose convention) are not values.
    """
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        key = str(key)
        if key.startswith("_") or key.endswith("_attrs"):
            continue
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            yield from scalar_leaves(value, path)
        elif isinstance(value, bool | np.bool_):
            yield path, bool(value)
        elif isinstance(value, int | np.integer):
            yield path, int(value)
        elif isinstance(value, float | np.floating):
            yield path, float(value)
        elif isinstance(value, str):
            yield path, value
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            yield path, value.item()


def attribute_name(path: str) -> str:
    """``azint/I`` -> ``azint_I``; anything not a letter, digit or underscore becomes ``_``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", path)
    if not name or not name[0].isalpha():
        name = f"r_{name}"
    return name


class DransposeReducer(DataServiceDevice):
    """Runs the reducer class on results in order; its publish tree's scalars are attributes."""

    ReducerClass = device_property(
        dtype=str, default_value="", doc="The reducer payload, 'package.module:Class'"
    )
    PayloadPath = device_property(
        dtype=(str,), default_value=[], doc="Extra directories to import the payload module from"
    )
    ResultDir = device_property(
        dtype=str,
        default_value="",
        doc="Write SCANID_processed.h5 here at the end of each scan (unless the scan names "
        "its output file)",
    )

    pushed = ("ProcessedResults", "Errors", "LastError", "ResultFile", "Results")

    ProcessedResults = snap("ProcessedResults", "int64", "Results reduced since the server started")
    Errors = snap("Errors", "int64", "Exceptions of the reducer payload since the server started")
    LastError = snap("LastError", str, "The last exception of the payload")
    ResultFile = snap("ResultFile", str, "The result file written for the last scan")
    Results = snap("Results", (str,), "Published values: 'tree/path -> AttributeName'")

    def check_config(self) -> None:
        if not self.ReducerClass:
            raise ValueError("the ReducerClass property is not set (e.g. mypackage.module:Class)")
        load_class(self.ReducerClass, list(self.PayloadPath))
        self._errors = ScanErrors()
        self._dynamic: dict[str, type] = {}  # attribute name -> python type
        self._names: dict[str, str] = {}  # path -> attribute name
        self._taken = {n.lower() for n in self.pushed} | RESERVED

    def make_service(self, scheduler: str) -> ReducerService:
        return ReducerService(
            self.get_name(),
            scheduler,
            self.ReducerClass,
            bind=self.data_bind(),
            search=list(self.PayloadPath),
            output_dir=self.ResultDir or None,
        )

    def _name_for(self, path: str) -> str:
        name = self._names.get(path)
        if name is None:
            base = attribute_name(path)
            name, n = base, 2
            while name.lower() in self._taken:
                name, n = f"{base}_{n}", n + 1
            self._taken.add(name.lower())
            self._names[path] = name
        return name

    def collect_service(self, svc: Any) -> Snapshot:
        c = svc.counters()
        values: dict[str, Any] = {
            "ProcessedResults": int(c["results"]),
            "Errors": int(c["errors"]),
            "LastError": c["last_error"] or "",
            "ResultFile": c["output"] or "",
        }
        published: dict[str, Any] = {}
        with svc.publish() as tree:
            for path, value in scalar_leaves(tree):
                published[self._name_for(path)] = value
        values["Results"] = [f"{p} -> {n}" for p, n in sorted(self._names.items())]
        values.update(published)
        scan_errors = self._errors.count(svc.scan, int(c["errors"]))
        cls = self.ReducerClass
        if svc.scan_active:
            state, text = DevState.RUNNING, f"Reducing a scan with {cls}: "
        else:
            state, text = DevState.ON, f"Idle, ready ({cls}): "
        text += f"{c['results']} results reduced since start."
        if c["output"]:
            text += f" Last result file: {c['output']}."
        if scan_errors:
            state = DevState.ALARM
            text += f" {scan_errors} results failed in this scan; last: {c['last_error']}"
        return Snapshot(state, text, values)

    # -- dynamic attributes ----------------------------------------------------------------

    def before_push(self, snap: Snapshot) -> None:
        for name in self._names.values():
            if name in self._dynamic or name not in snap.values:
                continue
            value = snap.values[name]
            dtype = type(value)
            self.add_attribute(
                attribute(
                    name=name,
                    dtype={bool: bool, int: "int64", float: float}.get(dtype, str),
                    access=AttrWriteType.READ,
                    fget=self._read_published,
                )
            )
            self.set_change_event(name, True, False)
            self._dynamic[name] = dtype

    def dynamic_pushed(self) -> tuple[str, ...]:
        return tuple(self._dynamic)

    def _read_published(self, attr: tango.Attribute) -> Any:
        name = attr.get_name()
        value = self.value(name)
        if value is None:
            raise ValueError(f"{name} has no value in the current scan")
        return self._dynamic[name](value)
