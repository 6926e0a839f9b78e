"""DransposeReducer: reduces the workers' results in order; every value of the payload's
``publish`` tree is an attribute (scalar, spectrum or image; naming rule in
``core.publishview``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType, DevState
from tango.server import attribute, device_property

from tango_dranspose.core.payload import enter_payload_root, load_class
from tango_dranspose.core.publishview import Leaf, assign_names, leaves
from tango_dranspose.devices.attrs import array_format, snap
from tango_dranspose.devices.base import Snapshot
from tango_dranspose.devices.service import DataServiceDevice, ScanErrors
from tango_dranspose.runtime.reducer import ReducerService

MAX_ATTRIBUTE_BYTES = 64 << 20  # larger values are listed in Results, not served
_TYPES = {"bool": bool, "int64": "int64", "float64": float, "str": str}


def _shape(leaf: Leaf) -> tuple[str, str]:
    return leaf.kind, leaf.dtype


class DransposeReducer(DataServiceDevice):
    """Runs the reducer class on results in order; its publish tree's values are attributes."""

    ReducerClass = device_property(
        dtype=str,
        default_value="",
        doc="The reducer payload, 'package.module:Class'",
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
    AllowedResultDirs = device_property(
        dtype=(str,),
        default_value=[],
        doc="Directories an Arm's output_file, or a scan's scan_dir, may place the result file "
        "in (symlinks resolved); anywhere else the arm is refused. Empty: ResultDir alone, or, "
        "without ResultDir, nowhere (output_file and scan_dir are refused)",
    )
    ResultWritePeriod = device_property(
        dtype=float,
        default_value=10.0,
        doc="Seconds between rewrites of the result file during a scan (0: only at the end)",
    )
    PublishPeriod = device_property(
        dtype=float,
        default_value=0.2,
        doc="Seconds between updates (and change events) of the published values; once more "
        "when the scan finishes. The reducer never waits for them.",
    )

    MaxQueuedMiB = device_property(
        dtype=int,
        default_value=256,
        doc="Results received and not yet reduced, at most (MiB). A reducer slower than the "
        "workers holds them back at this point, and they the ingesters and the detectors: "
        "memory stays bounded whatever the payload's speed",
    )
    MaxPushedBytes = device_property(
        dtype=int,
        default_value=1 << 20,
        doc="Published arrays larger than this get no change events: clients read them (Taurus "
        "polls). Large events hold pytango's GIL until sent, so a stalled client would stall "
        "the reducer.",
    )

    pushed = ("ProcessedResults", "Errors", "LastError", "ResultFile", "Results")

    ProcessedResults = snap("ProcessedResults", "int64", "Results reduced since the server started")
    Errors = snap("Errors", "int64", "Exceptions of the reducer payload since the server started")
    LastError = snap("LastError", str, "The last exception of the payload")
    ResultFile = snap("ResultFile", str, "The result file written for the last scan")
    QueuedBytes = snap(
        "QueuedBytes",
        "int64",
        "Bytes of results received and not reduced yet (bounded by MaxQueuedMiB)",
        unit="B",
    )
    Duplicates = snap(
        "Duplicates",
        "int64",
        "Results of the current or last scan dropped as already reduced (an event sent again "
        "after its worker died)",
    )
    Results = snap(
        "Results",
        (str,),
        "Published values: 'tree/path -> AttributeName (kind dtype)', or why one is not an "
        "attribute",
    )

    def check_config(self) -> None:
        if not self.ReducerClass:
            raise ValueError("the ReducerClass property is not set (e.g. mypackage.module:Class)")
        load_class(self.ReducerClass, list(self.PayloadPath))
        self._errors = ScanErrors()
        # Published values of the current scan: path -> attribute name, and their leaves.
        self._names: dict[str, str] = {}
        self._published: dict[str, Leaf] = {}  # attribute name -> leaf (value copied)
        self._problems: dict[str, str] = {}
        self._pub_scan: Any = None
        self._pub_at = 0.0
        self._pub_final = False
        self._dynamic: dict[str, tuple[str, str]] = {}  # attribute name -> (kind, dtype)
        self._reported: set[str] = set()

    def make_service(self, scheduler: str) -> ReducerService:
        service = ReducerService(
            self.get_name(),
            scheduler,
            self.ReducerClass,
            bind=self.data_bind(),
            search=list(self.PayloadPath),
            output_dir=self.ResultDir or None,
            write_interval=float(self.ResultWritePeriod) or None,
            max_queued_bytes=max(int(self.MaxQueuedMiB), 1) << 20,
            allowed_result_dirs=self.allowed_result_dirs(),
        )
        # Payloads open data files relative to their repository, as under dranspose (a
        # server with several payload devices runs in the last one's).
        enter_payload_root(service.cls)
        return service

    def allowed_result_dirs(self) -> list[str]:
        """AllowedResultDirs, or by default ResultDir alone (none without it)."""
        allowed = [d for d in self.AllowedResultDirs if d.strip()]
        if allowed:
            return allowed
        return [self.ResultDir] if self.ResultDir else []

    def tick_period(self) -> float:
        return min(float(self.EventPeriod), float(self.PublishPeriod))

    # -- published values (on the runtime loop) --------------------------------------------

    def _refresh_published(self, svc: Any) -> None:
        scan = svc.scan
        now = time.monotonic()
        finished = scan is not None and scan.done
        new_scan = scan is not self._pub_scan
        recent = now - self._pub_at < self.PublishPeriod
        if not new_scan and recent and (not finished or self._pub_final):
            return
        if not new_scan and self._pub_final:
            return  # the finished scan's values were taken: nothing changes until the next
        self._pub_at = now
        self._pub_final = finished
        found: list[Leaf] = []
        with svc.publish() as tree:
            # Copies, taken under the payload's lock: the payload may change arrays in place.
            for leaf in leaves(tree):
                if isinstance(leaf.value, np.ndarray):
                    if leaf.nbytes > MAX_ATTRIBUTE_BYTES:
                        leaf = dataclasses.replace(
                            leaf,
                            kind="",
                            value=None,
                            problem=f"{leaf.nbytes / 2**20:.0f} MiB is more than the "
                            f"{MAX_ATTRIBUTE_BYTES >> 20} MiB an attribute may carry",
                        )
                    else:
                        leaf = dataclasses.replace(leaf, value=leaf.value.copy())
                found.append(leaf)
        if new_scan:
            # A new scan names its values afresh; attributes of values gone disappear.
            self._pub_scan = scan
            taken = [*self.pushed, *RESERVED_NAMES]
            self._names = assign_names([lf.path for lf in found if lf.kind], taken)
        else:
            extra = [lf.path for lf in found if lf.kind and lf.path not in self._names]
            if extra:
                taken = [*self.pushed, *RESERVED_NAMES, *self._names.values()]
                self._names.update(assign_names(extra, taken))
        published, problems = {}, {}
        for leaf in found:
            if leaf.kind:
                published[self._names[leaf.path]] = leaf
            else:
                problems[leaf.path] = leaf.problem
                if leaf.path not in self._reported:
                    self._reported.add(leaf.path)
                    self.warn_stream(
                        f"published value {leaf.path} is not an attribute: {leaf.problem}"
                    )
        self._published, self._problems = published, problems

    def collect_service(self, svc: Any) -> Snapshot:
        c = svc.counters()
        self._refresh_published(svc)
        results = [
            f"{leaf.path} -> {name} ({leaf.kind} {leaf.dtype})"
            for name, leaf in sorted(self._published.items(), key=lambda kv: kv[1].path)
        ]
        results += [
            f"{path}: not an attribute ({why})" for path, why in sorted(self._problems.items())
        ]
        values: dict[str, Any] = {
            "ProcessedResults": int(c["results"]),
            "Errors": int(c["errors"]),
            "LastError": c["last_error"] or "",
            "ResultFile": c["output"] or "",
            "Results": results,
            "QueuedBytes": int(c.get("queued_bytes", 0)),
            "Duplicates": int(c.get("duplicates", 0)),
        }
        for name, leaf in self._published.items():
            values[name] = leaf.value
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

    # -- dynamic attributes (Tango side, holding the monitor) ------------------------------

    def before_push(self, snap: Snapshot) -> None:
        wanted = dict(self._published)
        for name, shape in list(self._dynamic.items()):
            leaf = wanted.get(name)
            if leaf is None or _shape(leaf) != shape:
                self.remove_attribute(name)
                del self._dynamic[name]
        for name, leaf in wanted.items():
            if name in self._dynamic:
                continue
            self.add_attribute(self._make_attribute(name, leaf))
            if leaf.nbytes <= self.MaxPushedBytes:
                self.set_change_event(name, True, False)
            self._dynamic[name] = _shape(leaf)

    def _make_attribute(self, name: str, leaf: Leaf) -> attribute:
        return attribute(
            name=name,
            dtype=_TYPES.get(leaf.dtype, leaf.dtype),
            access=AttrWriteType.READ,
            fget=self._read_published,
            unit=leaf.unit,
            label=leaf.label or leaf.path,
            doc=leaf.description or f"published value {leaf.path}",
            **array_format(leaf.kind),
        )

    def dynamic_pushed(self) -> tuple[str, ...]:
        limit = self.MaxPushedBytes
        return tuple(
            name
            for name in self._dynamic
            if name in self._published and self._published[name].nbytes <= limit
        )

    def _read_published(self, attr: tango.Attribute) -> Any:
        name = attr.get_name()
        value = self.value(name)
        if value is None:
            raise ValueError(f"{name} has no value in the current scan")
        return value


RESERVED_NAMES = ("State", "Status", "Init")
