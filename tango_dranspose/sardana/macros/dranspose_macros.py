"""tango-dranspose macros: arm the pipeline from the scan about to run, show and tune it.

Load with the MacroServer's ``MacroPath`` holding this directory (``docs/sardana.md``), then:

    senv DransposeController b308a/dranspose/controller
    defgh dranspose_pre_scan pre-scan
    defgh dranspose_post_scan post-scan
    ascan mot01 0 10 10 0.1              # armed with 11 points + start/end events

or, for one scan, ``dranspose_scan "ascan mot01 0 10 10 0.1"``. ``dranspose_status``,
``dranspose_get``, ``dranspose_set`` and ``dranspose_stop`` talk to the pipeline from spock.

The environment variables (``senv``), with their defaults:

==========================  ===============  ==================================================
``DransposeController``     (required)       the pipeline: its DransposeController device
``DransposeOnError``        ``abort``        arming failed: ``abort`` the scan, or ``warn`` and
                                             scan without the pipeline
``DransposeStreams``        (unset)          channel -> stream (``{"twod01": "cam"}``, or
                                             ``{"twod01": {"stream": "cam",
                                             "frames_per_point": 10}}``); unset: channels named
                                             as a stream the pipeline serves
``DransposeSardanaStream``  ``sardana``      stream of Sardana's records (used when the pipeline
                                             serves it; needs DataRecorder DransposeRecorder);
                                             ``off``: no Sardana stream
``DransposeSardanaUrl``     (looked up)      where DransposeRecorder posts; default: the
                                             UpstreamUrl of the stream's ingester
``DransposeFinishTimeout``  ``30``           seconds the post-scan hook waits for the pipeline
``DransposeWrap``           ``True``         start/end events around the points
``DransposeConstraint``     ``point``        ``point``: a point's frames on one worker;
                                             ``event``: each event anywhere
``DransposeTags``           ``["generic"]``  worker tags the events ask for
``DransposeParameters``     ``{}``           payload parameters sent with every arm
``DransposeRecordDir``      (unset)          ingesters record the scan's upstream messages here
==========================  ===============  ==================================================
"""

from __future__ import annotations

from typing import Any

from sardana.macroserver.macro import Macro, Type
from sardana.macroserver.msexception import UnknownEnv

from tango_dranspose.sardana._pipeline import ACTIVE, Pipeline, PipelineError, recorder_url
from tango_dranspose.sardana.mapping import (
    Channel,
    MappingError,
    Motor,
    PipelineSettings,
    ScanInfo,
    parse_bool,
    parse_streams,
    plan_arm,
)

PREFIX = "dranspose"
RECORDER = "DransposeRecorder"
POLICIES = ("abort", "warn")
DEFAULT_FINISH_TIMEOUT = 30.0


class DransposeArmError(RuntimeError):
    """Arming failed and ``DransposeOnError`` is ``abort``: ends the scan before any point."""


# --- what the macros read from the MacroServer environment ----------------------------------


def env(macro: Macro, name: str, default: Any = None) -> Any:
    try:
        return macro.getEnv(name)
    except UnknownEnv:
        return default


def policy(macro: Macro) -> str:
    value = str(env(macro, "DransposeOnError", "abort")).strip().lower()
    return value if value in POLICIES else "abort"


def finish_timeout(macro: Macro) -> float:
    try:
        return float(env(macro, "DransposeFinishTimeout", DEFAULT_FINISH_TIMEOUT))
    except (TypeError, ValueError):
        return DEFAULT_FINISH_TIMEOUT


def settings(macro: Macro, available: list[str]) -> PipelineSettings:
    sardana = env(macro, "DransposeSardanaStream", "sardana")
    constraint = str(env(macro, "DransposeConstraint", "point")).strip().lower()
    if constraint not in ("point", "event"):
        raise MappingError(f"DransposeConstraint must be point or event, got {constraint!r}")
    tags = env(macro, "DransposeTags", ["generic"])
    if isinstance(tags, str):
        tags = tags.replace(",", " ").split()
    parameters = env(macro, "DransposeParameters", {}) or {}
    if not isinstance(parameters, dict):
        raise MappingError(f"DransposeParameters must be a dict, got {parameters!r}")
    record_dir = env(macro, "DransposeRecordDir", None)
    return PipelineSettings(
        streams=parse_streams(env(macro, "DransposeStreams", None)),
        sardana_stream=None
        if str(sardana).strip().lower() in ("", "none", "off", "false")
        else str(sardana),
        available=available,
        wrap=parse_bool("DransposeWrap", env(macro, "DransposeWrap", None), True),
        constraint="event" if constraint == "event" else "point",
        tags=[str(t) for t in tags],
        parameters=parameters,
        record_dir=str(record_dir) if record_dir else None,
    )


def pipeline(macro: Macro) -> Pipeline:
    return Pipeline(str(env(macro, "DransposeController", "") or ""))


# --- the scan ---------------------------------------------------------------------------------


def find_scan(macro: Macro) -> Any:
    """The scan macro a hook runs in: the nearest ancestor with a scan (``_gScan``)."""
    current = macro.getParentMacro()
    while current is not None:
        if getattr(current, "_gScan", None) is not None:
            return current
        current = current.getParentMacro()
    return None


def _list(values: Any) -> list[Any]:
    """A list of a scan attribute that may be missing, a list or a numpy array."""
    return [] if values is None else list(values)


def _floats(values: Any) -> list[float | None]:
    return [float(v) if v is not None else None for v in _list(values)]


def read_scan(macro: Macro, scan: Any) -> ScanInfo:
    """The plain description of the scan about to run (``mapping.ScanInfo``)."""
    gscan = scan._gScan  # private: hence the pinned sardana version
    senv: dict[str, Any] = dict(getattr(gscan, "_env", None) or {})
    names: list[str] = []
    for motor in _list(getattr(scan, "motors", None)):
        names.append(motor.getName() if hasattr(motor, "getName") else str(motor))
    if not names:
        names = [str(m.name) for m in _list(getattr(gscan, "moveables", None))]
    starts, finals = _floats(getattr(scan, "starts", None)), _floats(getattr(scan, "finals", None))
    motors = [
        Motor(
            name,
            starts[i] if i < len(starts) else None,
            finals[i] if i < len(finals) else None,
        )
        for i, name in enumerate(names)
    ]
    channels = [
        Channel(label=str(ci.label), name=str(ci.full_name), alias=str(ci.name))
        for ci in gscan.measurement_group.getChannelsEnabledInfo()
    ]
    nb_points = getattr(scan, "nb_points", None)
    integ_time = getattr(scan, "integ_time", None)
    scan_file = _list(gscan.scan_file)
    extra = {
        "macro_id": scan.getID(),
        "door": macro.getDoorName(),
        "user": senv.get("user"),
        "armed_by": "tango_dranspose.sardana",
    }
    return ScanInfo(
        macro=scan.getName(),
        nb_points=int(nb_points) if nb_points is not None else None,
        scan_id=senv.get("serialno", gscan.scan_id),
        title=str(senv.get("title") or scan.getMacroCommand()),
        motors=motors,
        integ_time=float(integ_time) if isinstance(integ_time, int | float) else None,
        nr_intervs=[int(v) for v in _list(getattr(scan, "nr_intervs", None))],
        scan_dir=gscan.scan_dir,
        scan_file=[str(f) for f in scan_file],
        measurement_group=str(gscan.measurement_group.getName()),
        channels=channels,
        extra=extra,
    )


class Armed:
    """Kept on the scan macro (``_dranspose``) between its pre-scan and post-scan hooks.

    (Not a dataclass: the MacroServer loads this file without registering it in
    ``sys.modules``, which dataclasses need to resolve postponed annotations.)"""

    def __init__(
        self, pipeline: Pipeline | None = None, scan_id: str = "", sardana_url: str | None = None
    ) -> None:
        self.pipeline = pipeline
        self.scan_id = scan_id
        self.sardana_url = sardana_url  # where DransposeRecorder posts the scan's records
        self.ended = False


def arm_for_scan(macro: Macro, scan: Any) -> None:
    """The pre-scan hook: arm the pipeline with the scan's map, following the failure policy."""
    if getattr(scan, "_dranspose", None) is not None:
        return  # armed already: the wrapper and the general hook both ran
    scan._dranspose = Armed()
    try:
        pipe = pipeline(macro)
        plan = plan_arm(read_scan(macro, scan), settings(macro, pipe.streams()))
        if plan.request is None:
            macro.warning(f"{PREFIX}: {plan.reason}")
            return
        url = sardana_target(macro, pipe, plan.sardana_stream)
        state = pipe.scan_state()
        if state in ACTIVE:
            raise PipelineError(
                f"pipeline {pipe.name} is still {state} scan {pipe.read('ScanId')}; "
                "dranspose_stop ends it"
            )
        scan_id = pipe.arm(plan.request_json())
    except (PipelineError, MappingError) as exc:
        message = f"{PREFIX}: cannot arm the pipeline for this scan: {exc}"
        if policy(macro) == "warn":
            macro.warning(f"{message}. The scan goes on without it (DransposeOnError is warn).")
            return
        macro.error(
            f"{message}. The scan is aborted (DransposeOnError is abort; senv DransposeOnError "
            "warn to scan without the pipeline)."
        )
        raise DransposeArmError(message) from None
    scan._dranspose = Armed(pipe, scan_id, url)
    _end_with_the_scan(macro, scan)
    macro.output(f"{PREFIX}: armed scan {scan_id} on {pipe.name}: {plan.reason}")


def sardana_target(macro: Macro, pipe: Pipeline, stream: str | None) -> str | None:
    """Where DransposeRecorder posts the scan's records (None: no Sardana stream); raises when
    the records could not get there, since the pipeline's scan would then never complete."""
    if not stream:
        return None
    recorders = env(macro, "DataRecorder", []) or []
    if isinstance(recorders, str):
        recorders = [recorders]
    if RECORDER not in [str(r) for r in recorders]:
        raise PipelineError(
            f"the map has the Sardana stream {stream}, but {RECORDER} is not a DataRecorder: "
            f"senv DataRecorder \"['{RECORDER}']\" (RecorderPath must hold "
            "tango_dranspose/sardana/recorders), or senv DransposeSardanaStream off"
        )
    url = env(macro, "DransposeSardanaUrl", None)
    return str(url).rstrip("/") if url else recorder_url(pipe.name, stream)


def _end_with_the_scan(macro: Macro, scan: Any) -> None:
    """A stopped or aborted scan aborts the pipeline's scan too (``on_stop``/``on_abort``)."""
    on_abort, on_stop = scan.on_abort, scan.on_stop

    def aborted() -> None:
        try:
            end_pipeline_scan(macro, scan, "the Sardana scan was aborted")
        finally:
            on_abort()

    def stopped() -> None:
        try:
            end_pipeline_scan(macro, scan, "the Sardana scan was stopped")
        finally:
            on_stop()

    scan.on_abort = aborted
    scan.on_stop = stopped


def end_pipeline_scan(macro: Macro, scan: Any, why: str) -> None:
    """Abort the pipeline's scan, once, and say so (safe in ``on_abort``)."""
    armed: Armed | None = getattr(scan, "_dranspose", None)
    if armed is None or armed.pipeline is None or armed.ended:
        return
    armed.ended = True
    pipe = armed.pipeline
    try:
        if pipe.scan_state() in ACTIVE and str(pipe.read("ScanId")) == armed.scan_id:
            pipe.abort()
            message = f"{PREFIX}: {why}: pipeline scan {armed.scan_id} aborted"
        else:
            message = f"{PREFIX}: {why}; pipeline scan {armed.scan_id} had ended"
        done = pipe.read("CompletedEvents")
        total = pipe.read("TotalEvents")
        message += f" ({done}/{total} events)"
    except PipelineError as exc:
        message = f"{PREFIX}: {why}, and the pipeline's scan could not be aborted: {exc}"
    try:
        macro.warning(message)
    except Exception:  # the macro may be aborting: the message still goes to the log
        macro.macro_server.warning(message)


def finish_for_scan(macro: Macro, scan: Any) -> None:
    """The post-scan hook: wait (bounded) for the pipeline's scan and report it."""
    armed: Armed | None = getattr(scan, "_dranspose", None)
    if armed is None or armed.pipeline is None or armed.ended:
        return
    status = getattr(getattr(scan._gScan, "_env", None), "get", lambda *_: None)("endstatus")
    if status is not None and _status_name(status) != "Normal":
        end_pipeline_scan(macro, scan, f"the Sardana scan ended ({_status_name(status)})")
        return
    armed.ended = True
    pipe = armed.pipeline
    timeout = finish_timeout(macro)
    try:
        state = pipe.wait_final(armed.scan_id, max(timeout, 0.0))
        done, total = pipe.read("CompletedEvents"), pipe.read("TotalEvents")
        if state == "finished":
            result = pipe.read("ResultFile")
            where = f"; result file {result}" if result else ""
            macro.output(
                f"{PREFIX}: pipeline scan {armed.scan_id} finished: {done}/{total} events{where}"
            )
        elif state in ACTIVE:
            macro.warning(
                f"{PREFIX}: pipeline scan {armed.scan_id} is still {state} after {timeout:g} s "
                f"({done}/{total} events); left running (dranspose_stop ends it)"
            )
        else:
            ledger = "; ".join(str(line) for line in pipe.read("Ledger") or ())
            last = pipe.read("LastError")
            macro.warning(
                f"{PREFIX}: pipeline scan {armed.scan_id} {state}: {done}/{total} events"
                + (f"; {ledger}" if ledger else "")
                + (f"; last error: {last}" if last else "")
            )
    except PipelineError as exc:
        macro.warning(f"{PREFIX}: cannot follow pipeline scan {armed.scan_id}: {exc}")


def _status_name(status: Any) -> str:
    try:
        from sardana.macroserver.scan.gscan import ScanEndStatus

        return str(ScanEndStatus.whatis(status))
    except Exception:
        return str(status)


# --- macros -----------------------------------------------------------------------------------


class dranspose_pre_scan(Macro):
    """Arm the pipeline for the scan about to run (``defgh dranspose_pre_scan pre-scan``).

    The trigger map follows the scan: its points (plus start and end events), the measurement
    group's channels that are pipeline streams and their frames per point, and Sardana's own
    records. The scan's id, title, macro, motors, points, integration time, directory and file
    go with the arm. If the pipeline cannot be armed, ``DransposeOnError`` decides: ``abort``
    the scan (default), or ``warn`` and go on."""

    def run(self) -> None:
        scan = find_scan(self)
        if scan is None:
            self.warning(f"{PREFIX}: dranspose_pre_scan runs as a pre-scan hook; nothing armed")
            return
        arm_for_scan(self, scan)


class dranspose_post_scan(Macro):
    """Follow the pipeline's scan to its end (``defgh dranspose_post_scan post-scan``): waits up
    to ``DransposeFinishTimeout`` s and reports events and the result file; a scan that did
    not end normally aborts the pipeline's scan."""

    def run(self) -> None:
        scan = find_scan(self)
        if scan is not None:
            finish_for_scan(self, scan)


class dranspose_scan(Macro):
    """Run one scan with the pipeline armed for it: ``dranspose_scan "ascan mot01 0 10 10 0.1"``
    (the general hooks, if defined, do not arm twice)."""

    param_def = [["scan_line", Type.String, None, "the scan, as typed in spock"]]

    def run(self, scan_line: str) -> None:
        scan, _ = self.createMacro(scan_line)
        if getattr(scan, "_gScan", None) is None or not hasattr(scan, "hooks"):
            self.warning(f"{PREFIX}: {scan_line!r} is not a hookable scan; run without pipeline")
            self.runMacro(scan)
            return
        scan.hooks = [
            (lambda: arm_for_scan(self, scan), ["pre-scan"]),
            *list(scan.hooks),
            (lambda: finish_for_scan(self, scan), ["post-scan"]),
        ]
        self.runMacro(scan)


class dranspose_status(Macro):
    """Show the pipeline: state, current or last scan, progress, members and ledger."""

    def run(self) -> None:
        try:
            info = pipeline(self).summary()
        except PipelineError as exc:
            self.error(f"{PREFIX}: {exc}")
            return
        lines = [
            f"State: {info['State']}",
            f"Status: {info['Status']}",
            f"Scan: {info['ScanId']} {info['ScanState']}: "
            f"{info['CompletedEvents']}/{info['TotalEvents']} events "
            f"({info['Progress'] or 0:.0f} %, {info['EventRate'] or 0:.1f} events/s)",
            f"Streams: {', '.join(info['Streams'] or ()) or 'none'}",
        ]
        for key in ("Ingesters", "Workers", "Reducers", "Ledger"):
            for line in info[key] or ():
                lines.append(f"{key[:-1] if key != 'Ledger' else 'Ledger'}: {line}")
        if info["LastError"]:
            lines.append(f"Last error: {info['LastError']}")
        if info["ResultFile"]:
            lines.append(f"Result file: {info['ResultFile']}")
        self.output("\n".join(lines))


class dranspose_get(Macro):
    """Show the pipeline's parameters (all, or the one named)."""

    param_def = [["name", Type.String, "", "parameter name (empty: all)"]]

    def run(self, name: str) -> None:
        try:
            values = pipeline(self).parameters()
        except PipelineError as exc:
            self.error(f"{PREFIX}: {exc}")
            return
        if name:
            if name not in values:
                self.error(f"{PREFIX}: no parameter {name!r} (there are: {', '.join(values)})")
                return
            values = {name: values[name]}
        if not values:
            self.output(f"{PREFIX}: the pipeline's payloads describe no parameters")
        for key, value in values.items():
            self.output(f"{key} = {value!r}")


class dranspose_set(Macro):
    """Set a pipeline parameter: ``dranspose_set threshold 12.5``. Mid-scan it applies from
    the first event not yet assigned."""

    param_def = [
        ["name", Type.String, None, "parameter name"],
        ["value", Type.String, None, "new value (converted to the parameter's type)"],
    ]

    def run(self, name: str, value: str) -> None:
        try:
            written = pipeline(self).set_parameter(name, value)
        except PipelineError as exc:
            self.error(f"{PREFIX}: {exc}")
            return
        self.output(f"{name} = {written!r}")


class dranspose_stop(Macro):
    """Stop the pipeline's scan now; the reducer finishes with what it has."""

    def run(self) -> None:
        try:
            pipe = pipeline(self)
            pipe.stop()
            self.output(
                f"{PREFIX}: scan {pipe.read('ScanId')} {pipe.scan_state()}: "
                f"{pipe.read('CompletedEvents')}/{pipe.read('TotalEvents')} events"
            )
        except PipelineError as exc:
            self.error(f"{PREFIX}: {exc}")
