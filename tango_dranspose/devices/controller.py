"""DransposeController: arms scans, owns the scheduler, shows progress and the ledger."""

from __future__ import annotations

import json
import time
from typing import Any

import tango
from tango import DevState
from tango.server import command, device_property

from tango_dranspose.core.parameters import ParameterError
from tango_dranspose.devices import discovery
from tango_dranspose.devices import parameters as pattrs
from tango_dranspose.devices.attrs import snap
from tango_dranspose.devices.base import PipelineDevice, Snapshot, throw
from tango_dranspose.devices.status import fault_phrases, ledger_lines, plural, scan_problems
from tango_dranspose.runtime.armrequest import parse_arm_request
from tango_dranspose.runtime.scheduler import ARM_TIMEOUT, ArmError, Scheduler

STOP_GRACE = 10.0  # seconds Stop waits for the reducer's finish before ending the scan anyway
MEMBERS_PERIOD = 5.0  # seconds between Tango DB lookups of the pipeline's devices
ACTIVE = ("arming", "running", "finishing")


class DransposeController(PipelineDevice):
    """The pipeline's controller: arm a scan with a trigger map, watch it, stop it."""

    ListenHost = device_property(
        dtype=str,
        default_value="127.0.0.1",
        doc="Interface the scheduler listens on for the pipeline's services; use the host's "
        "name or address when ingesters or workers run on other hosts.",
    )
    ControlPort = device_property(
        dtype=int, default_value=0, doc="TCP port of the scheduler (0: any free port)."
    )
    Window = device_property(
        dtype=int,
        default_value=32,
        doc="Events a worker may hold assigned but not yet processed.",
    )
    OnNewSeries = device_property(
        dtype=str,
        default_value="end",
        doc="What a scan does when an upstream starts a new series inside it (a detector "
        "restarted): 'end' that stream (its remaining frames count as missing) and finish the "
        "scan as 'interrupted', or 'fail' the scan at once.",
    )

    pushed = (
        "ScanId",
        "ScanState",
        "TotalEvents",
        "CompletedEvents",
        "Progress",
        "EventRate",
        "Streams",
        "Ingesters",
        "Workers",
        "Reducers",
        "Ledger",
        "DroppedFrames",
        "WorkerErrors",
        "ReducerErrors",
        "LastError",
        "ResultFile",
        "ReducedResults",
        "ReducedProgress",
        "Redispatched",
        "LostEvents",
        "LostComponents",
        "Outages",
        "Parameters",
        "ParameterVersion",
        "ParameterHistory",
    )

    ControlAddress = snap(
        "ControlAddress", str, "ZeroMQ endpoint of the scheduler; the other devices connect here"
    )
    ScanId = snap("ScanId", str, "Id of the current or last scan")
    ScanState = snap(
        "ScanState",
        str,
        "idle, arming, running, finishing, finished, stopped, aborted, failed or interrupted "
        "(ran to its end, but an upstream started a new series inside it)",
    )
    TotalEvents = snap("TotalEvents", "int64", "Events in the armed map (start/end wrap included)")
    CompletedEvents = snap("CompletedEvents", "int64", "Events processed by every worker")
    Progress = snap(
        "Progress", float, "Completed events, percent", unit="%", min_value=0, max_value=100
    )
    EventRate = snap("EventRate", float, "Events completed per second", unit="events/s")
    Streams = snap("Streams", (str,), "Streams the running ingesters serve")
    Ingesters = snap("Ingesters", (str,), "One line per ingester of this pipeline")
    Workers = snap("Workers", (str,), "One line per worker of this pipeline")
    Reducers = snap("Reducers", (str,), "One line per reducer of this pipeline")
    Ledger = snap("Ledger", (str,), "Per stream: frames delivered, discarded, missing, dropped")
    LedgerJson = snap("LedgerJson", str, "The per-stream ledger as JSON, for programs")
    ArmedMap = snap("ArmedMap", str, "The trigger map of the current or last scan (JSON)")
    ScanMetadata = snap("ScanMetadata", str, "Metadata the current or last scan was armed with")
    DroppedFrames = snap("DroppedFrames", "int64", "Frames dropped in the current or last scan")
    WorkerErrors = snap("WorkerErrors", "int64", "Payload exceptions of workers in the scan")
    ReducerErrors = snap("ReducerErrors", "int64", "Payload exceptions of the reducer in the scan")
    LastError = snap("LastError", str, "The last error of the current or last scan")
    ResultFile = snap("ResultFile", str, "The result file the reducer wrote for the last scan")
    ReducedResults = snap(
        "ReducedResults", "int64", "Results the reducer reduced in the current or last scan"
    )
    ReducedProgress = snap(
        "ReducedProgress",
        float,
        "Results reduced of those the workers produced so far, percent: below 100 while the "
        "reducer lags behind the workers",
        unit="%",
        min_value=0,
        max_value=100,
    )
    Redispatched = snap(
        "Redispatched",
        "int64",
        "Events sent again to a live worker because the worker they were assigned to died",
    )
    LostEvents = snap(
        "LostEvents", "int64", "Events or results of the scan that were lost (see LostReasons)"
    )
    LostReasons = snap("LostReasons", (str,), "Per reason: how many events or results were lost")
    LostComponents = snap(
        "LostComponents",
        (str,),
        "Components that died during the current or last scan, and those that rejoined it",
    )
    Outages = snap(
        "Outages", (str,), "Streams of the running scan whose upstream is not connected now"
    )
    FailureReason = snap("FailureReason", str, "Why the current or last scan failed")
    Parameters = snap(
        "Parameters", (str,), "Names of the payloads' parameters (attributes param_NAME)"
    )
    ParameterVersion = snap(
        "ParameterVersion", "int64", "Version of the current parameter values (grows on change)"
    )
    ParameterHistory = snap(
        "ParameterHistory",
        (str,),
        "Parameter versions of the current or last scan: from which event, and the first "
        "event each worker computed with it",
    )
    ParameterHistoryJson = snap("ParameterHistoryJson", str, "ParameterHistory as JSON")

    # -- runtime ---------------------------------------------------------------------------

    def start_runtime(self) -> None:
        self._members: dict[str, list[str]] = {}
        self._members_at = 0.0
        self._armed_map = ""
        self._metadata = ""
        self._param_attrs: dict[str, str] = {}  # attribute name -> parameter name
        if self.OnNewSeries not in ("end", "fail"):
            raise ValueError(
                f"property OnNewSeries must be 'end' or 'fail', not {self.OnNewSeries!r}"
            )
        self._scheduler = Scheduler(
            f"tcp://{self.ListenHost}:{self.ControlPort}",
            window=self.Window,
            on_new_series=self.OnNewSeries,
        )

        async def start() -> None:
            await self._scheduler.start()
            self._scheduler.on_change = self.changed

        self.run(start())

    async def stop_runtime(self) -> None:
        if getattr(self, "_scheduler", None) is not None and self._scheduler.address:
            await self._scheduler.stop("aborted")
            await self._scheduler.close()

    def periodic(self) -> None:
        if time.monotonic() - self._members_at < MEMBERS_PERIOD:
            return
        self._members_at = time.monotonic()
        try:
            self._members = discovery.members(tango.Database(), self.Pipeline)
        except Exception as exc:  # the DB may be restarting; keep the last answer
            self.warn_stream(f"cannot list the pipeline's devices: {exc}")

    # -- commands --------------------------------------------------------------------------

    @command(
        dtype_in=str,
        dtype_out=str,
        doc_in='A trigger map (JSON), or {"map": MAP, "scan_id", "title", "output_file", '
        '"record_dir", "parameters", "metadata"}',
        doc_out="The scan id",
    )
    def Arm(self, request: str) -> str:
        try:
            req = parse_arm_request(request)
        except ValueError as exc:
            throw("DRANSPOSE_InvalidRequest", str(exc), "DransposeController.Arm")
        sched = self._scheduler
        try:
            scan_id = self.run(
                sched.arm(
                    req.map,
                    scan_id=req.scan_id,
                    parameters=req.parameter_bytes(),
                    metadata=req.scan_metadata(),
                    record_dir=req.record_dir,
                ),
                timeout=ARM_TIMEOUT + 5.0,
            )
        except ArmError as exc:
            self.refresh_now()
            throw("DRANSPOSE_ArmRefused", str(exc), "DransposeController.Arm")
        except TimeoutError as exc:
            throw("DRANSPOSE_ArmTimeout", str(exc), "DransposeController.Arm")
        self._armed_map = json.dumps(req.map, separators=(",", ":"))
        self._metadata = json.dumps(req.scan_metadata(), default=str)
        self.info_stream(f"armed scan {scan_id}")
        self.refresh_now()
        return str(scan_id)

    @command(doc_in="End the scan now; the reducer finishes with what it has")
    def Stop(self) -> None:
        self._end_scan("stopped")

    @command(doc_in="End the scan now, as Stop, and mark it aborted")
    def Abort(self) -> None:
        self._end_scan("aborted")

    def _end_scan(self, reason: str) -> None:
        self.run(self._scheduler.stop(reason, grace=STOP_GRACE), timeout=STOP_GRACE + 5.0)
        self.info_stream(f"scan {reason}")
        self.refresh_now()

    # -- snapshot --------------------------------------------------------------------------

    def collect(self) -> Snapshot:
        sched = self._scheduler
        summary = sched.summary()
        comps = sched.components
        state = summary.get("state", "idle")
        lines: dict[str, list[str]] = {"ingester": [], "worker": [], "reducer": []}
        absent: list[str] = []
        dead: list[str] = []
        names = {k: set(v) for k, v in self._members.items()}
        for comp in comps.values():
            names.setdefault(comp.kind, set()).add(comp.name)
        for kind in lines:
            for name in sorted(names.get(kind, ())):
                found = comps.get(name)
                if found is None:
                    absent.append(name)
                    lines[kind].append(f"{name}: not running")
                    continue
                if not found.alive:
                    dead.append(name)
                lines[kind].append(f"{name}: {_describe(found)}")
        streams = sorted({s for c in comps.values() if c.alive for s in c.streams})
        ledger = summary.get("ledger") or {}
        values: dict[str, Any] = {
            "ControlAddress": sched.address,
            "ScanId": summary.get("scan_id", ""),
            "ScanState": state,
            "TotalEvents": int(summary.get("total_events", 0)),
            "CompletedEvents": int(summary.get("completed_events", 0)),
            "Progress": float(summary.get("progress", 0.0)),
            "EventRate": float(summary.get("event_rate", 0.0)),
            "Streams": streams,
            "Ingesters": lines["ingester"],
            "Workers": lines["worker"],
            "Reducers": lines["reducer"],
            "Ledger": ledger_lines(ledger),
            "LedgerJson": json.dumps(ledger, default=str),
            "ArmedMap": self._armed_map,
            "ScanMetadata": self._metadata,
            "DroppedFrames": sum(
                int(v) for c in ledger.values() for v in (c.get("dropped") or {}).values()
            ),
            "WorkerErrors": int(summary.get("worker_errors", 0) or 0),
            "ReducerErrors": int(summary.get("reducer_errors", 0) or 0),
            "LastError": summary.get("last_error") or "",
            "ResultFile": str((summary.get("reducer") or {}).get("output") or ""),
            "ReducedResults": int(summary.get("results_reduced", 0) or 0),
            "ReducedProgress": float(summary.get("reduced_progress", 0.0) or 0.0),
            "Redispatched": int(summary.get("redispatched", 0) or 0),
            "LostEvents": sum(int(n) for n in (summary.get("lost_events") or {}).values()),
            "LostReasons": [
                f"{reason}: {n}" for reason, n in sorted((summary.get("lost_events") or {}).items())
            ],
            "LostComponents": [f"{n}: died" for n in summary.get("lost_components") or []]
            + [f"{n}: rejoined" for n in summary.get("rejoined") or []],
            "Outages": [f"{s}: {why}" for s, why in sorted((summary.get("outages") or {}).items())],
            "FailureReason": summary.get("failure") or "",
            **self._parameter_values(summary.get("parameters") or {}),
        }
        return Snapshot(*self._state(summary, dead, absent, comps), values)

    def state_key(self) -> Any:
        scan = self._scheduler.scan
        return (
            None if scan is None else (scan.scan_id, scan.state),
            len(self._scheduler.components),
            self._scheduler.params.current.number,
            len(self._scheduler.params.descriptions),
        )

    def _parameter_values(self, params: dict[str, Any]) -> dict[str, Any]:
        store = self._scheduler.params
        values: dict[str, Any] = {
            "Parameters": sorted(store.descriptions),
            "ParameterVersion": int(params.get("version", 0)),
            "ParameterHistoryJson": json.dumps(params.get("segments", [])),
        }
        lines = []
        for seg in params.get("segments", []):
            shown = ", ".join(f"{k}={v}" for k, v in seg["values"].items())
            applied = ", ".join(f"{w} at {e}" for w, e in seg["applied"].items()) or "nobody yet"
            lines.append(
                f"v{seg['version']} from event {seg['from_event']}: {shown or '(defaults)'}; "
                f"used by {applied}"
            )
        values["ParameterHistory"] = lines
        for name, desc in store.descriptions.items():
            values[pattrs.attribute_name(name)] = pattrs.typed(desc, store.value_of(name))
        return values

    # -- parameter attributes (Tango side) -------------------------------------------------

    def before_push(self, snap: Snapshot) -> None:
        store = self._scheduler.params
        for name in snap.values.get("Parameters", []):
            attr = pattrs.attribute_name(name)
            if attr in self._param_attrs:
                continue
            desc = store.descriptions[name]
            self.add_attribute(
                pattrs.make_attribute(desc, self._read_parameter, self._write_parameter)
            )
            self.set_change_event(attr, True, False)
            self._param_attrs[attr] = name
            self._restore(name, attr)

    def _restore(self, name: str, attr: str) -> None:
        """After a restart, the memorized value comes back (unless set meanwhile).

        It is checked like any write (set_parameters): a value memorized before it would have
        been refused, or that the payload's new version cannot read, is not applied; the
        parameter keeps its default and the log says why."""
        store = self._scheduler.params
        if name in store.values:
            return
        try:
            text = pattrs.memorized_value(self.get_name(), attr)
            if text is not None:
                raw = pattrs.from_memorized(store.descriptions[name], text)
                self.run(self._scheduler.set_parameters({name: raw}))
        except ParameterError as exc:
            self.error_stream(f"not applying the memorized {attr} ({exc}); it keeps its default")
        except (tango.DevFailed, TimeoutError) as exc:
            self.warn_stream(f"cannot restore the memorized {attr}: {exc}")

    def dynamic_pushed(self) -> tuple[str, ...]:
        return tuple(self._param_attrs)

    def _read_parameter(self, attr: tango.Attribute) -> Any:
        return self.value(attr.get_name())

    def _write_parameter(self, attr: tango.WAttribute) -> None:
        name = self._param_attrs[attr.get_name()]
        desc = self._scheduler.params.descriptions[name]
        # Checked before it is kept: Tango memorizes a written value only after this method
        # returned, so a refusal here (DevFailed) leaves the DB's __value as it was.
        try:
            raw = pattrs.raw_value(desc, attr.get_write_value())
            version = self.run(self._scheduler.set_parameters({name: raw}))
        except ParameterError as exc:
            throw("DRANSPOSE_InvalidParameter", str(exc), "DransposeController.write")
        if version is not None:
            self.info_stream(f"parameter {name} changed: version {version.number}")
        self.refresh_now()

    # -- state -----------------------------------------------------------------------------

    def _state(
        self, summary: dict[str, Any], dead: list[str], absent: list[str], comps: dict[str, Any]
    ) -> tuple[DevState, str]:
        state = summary.get("state", "idle")
        scan_id = summary.get("scan_id", "")
        if state in ACTIVE:
            done, total = summary.get("completed_events", 0), summary.get("total_events", 0)
            text = (
                f"Scan {scan_id} {state}: {done} of {total} events "
                f"({summary.get('progress', 0.0):.1f}%), {summary.get('event_rate', 0.0):,.0f} "
                f"events/s."
            )
            problems = scan_problems(summary)
            faults = fault_phrases(summary, dead)
            if problems:
                text += " So far: " + "; ".join(problems) + "."
            if faults:
                # Running, but without something it started with: the scan goes on.
                return DevState.ALARM, text + " Degraded: " + "; ".join(faults) + "."
            return DevState.RUNNING, text
        if dead:
            what = f"{', '.join(dead)} stopped answering"
            if state == "failed":
                return DevState.FAULT, (
                    f"Scan {scan_id} failed: {summary.get('failure') or 'see LastError'}. "
                    f"{what[0].upper()}{what[1:]}; restart it to arm again."
                )
            return DevState.ALARM, f"{what[0].upper()}{what[1:]}."
        alive = [c for c in comps.values() if c.alive]
        crew = ", ".join(
            plural(sum(1 for c in alive if c.kind == k), k)
            for k in ("ingester", "worker", "reducer")
        )
        missing = f" Not running: {', '.join(absent)}." if absent else ""
        if state == "idle":
            if absent:
                return DevState.ALARM, f"Idle; {crew} running.{missing}"
            return DevState.ON, f"Idle, ready to arm; {crew} running."
        problems = scan_problems(summary)
        elapsed = float(summary.get("elapsed", 0.0))
        head = (
            f"Scan {scan_id} {state}: {summary.get('completed_events', 0)} of "
            f"{summary.get('total_events', 0)} events in {elapsed:.1f} s"
        )
        if state == "failed":
            return DevState.ALARM, (
                f"{head}, failed: {summary.get('failure') or 'see LastError'}.{missing} "
                "Ready to arm."
            )
        problems += fault_phrases(summary, [])
        if problems or absent or state == "interrupted":
            detail = "; ".join(problems) or "no problems in the scan"
            return DevState.ALARM, f"{head}, with problems: {detail}.{missing} Ready to arm."
        return DevState.ON, f"{head}. Ready to arm; {crew} running."


def _describe(comp: Any) -> str:
    c = comp.counters
    if not comp.alive:
        return "stopped answering"
    if comp.kind == "ingester":
        return (
            f"streams {', '.join(comp.streams)}; {c.get('frames', 0)} frames, "
            f"{c.get('dropped', 0)} dropped"
        )
    if comp.kind == "worker":
        return (
            f"tags {', '.join(comp.tags)}; {c.get('processed', 0)} events, "
            f"{c.get('errors', 0)} errors, load {100 * float(c.get('load', 0.0)):.0f}%"
        )
    return f"{c.get('results', 0)} results, {c.get('errors', 0)} errors"
