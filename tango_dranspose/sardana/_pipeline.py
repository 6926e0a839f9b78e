"""The pipeline's controller as the macros see it: a small synchronous Tango client.

No Sardana here (the MacroServer skips files starting with ``_``). Every Tango failure becomes
a :class:`PipelineError` whose message a beamline scientist can act on.
"""

from __future__ import annotations

import json
import time
from typing import Any

import tango

ACTIVE = ("arming", "running", "finishing")
FINAL = ("idle", "finished", "stopped", "aborted", "failed")
ARM_TIMEOUT_MS = 30_000  # the controller confirms an arm within ~20 s or refuses it


class PipelineError(RuntimeError):
    """The pipeline cannot do what was asked; the message says why."""


def describe(exc: tango.DevFailed) -> str:
    """The origin of a DevFailed (the first error of its stack), in words."""
    err = exc.args[0] if exc.args else None
    if err is None:
        return str(exc)
    desc = " ".join(str(err.desc).split())
    reason = str(err.reason)
    if reason == "API_DeviceNotExported":
        return "the device is not running (registered, not exported): start its server"
    if reason == "DB_DeviceNotDefined":
        return "no such device in the Tango DB"
    if reason == "API_CantConnectToDevice":
        return f"{desc} (is its server running?)"
    if reason.startswith("DRANSPOSE_") or not desc:
        return f"{desc} [{reason}]" if desc else reason
    return desc


class Pipeline:
    """The ``DransposeController`` device ``name``."""

    def __init__(self, name: str, timeout_ms: int = ARM_TIMEOUT_MS) -> None:
        if not name:
            raise PipelineError(
                "no pipeline is set: senv DransposeController <device of the DransposeController>"
            )
        self.name = name
        try:
            self.proxy = tango.DeviceProxy(name)
            # Ping first: a failed connection says why only once; the next attempts within
            # a second only say "delayed" (set_timeout_millis would make that first attempt).
            self.proxy.ping()
            self.proxy.set_timeout_millis(timeout_ms)
        except tango.DevFailed as exc:
            raise PipelineError(f"pipeline {name}: {describe(exc)}") from None

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except tango.DevFailed as exc:
            raise PipelineError(f"pipeline {self.name}: {what}: {describe(exc)}") from None

    def read(self, attr: str) -> Any:
        return self._call(f"reading {attr}", lambda: self.proxy.read_attribute(attr).value)

    def state(self) -> str:
        return str(self._call("reading its State", self.proxy.state))

    def status(self) -> str:
        return str(self._call("reading its Status", self.proxy.status))

    def streams(self) -> list[str]:
        return [str(s) for s in (self.read("Streams") or ())]

    def scan_state(self) -> str:
        return str(self.read("ScanState"))

    def arm(self, request_json: str) -> str:
        return str(self._call("Arm", self.proxy.command_inout, "Arm", request_json))

    def stop(self) -> None:
        self._call("Stop", self.proxy.command_inout, "Stop")

    def abort(self) -> None:
        self._call("Abort", self.proxy.command_inout, "Abort")

    def wait_final(self, scan_id: str, timeout: float, poll: float = 0.1) -> str:
        """The state of scan ``scan_id`` once final, or its state when ``timeout`` is over."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.scan_state()
            current = str(self.read("ScanId"))
            if current != scan_id:
                return f"replaced by scan {current}"
            if state in FINAL or time.monotonic() >= deadline:
                return state
            time.sleep(poll)

    def summary(self) -> dict[str, Any]:
        """What ``dranspose_status`` shows."""
        names = (
            "ScanId",
            "ScanState",
            "CompletedEvents",
            "TotalEvents",
            "Progress",
            "EventRate",
            "Streams",
            "Ingesters",
            "Workers",
            "Reducers",
            "Ledger",
            "LastError",
            "ResultFile",
        )
        out: dict[str, Any] = {"State": self.state(), "Status": self.status()}
        try:
            values = self.proxy.read_attributes(list(names))
        except tango.DevFailed as exc:
            raise PipelineError(f"pipeline {self.name}: {describe(exc)}") from None
        for name, value in zip(names, values, strict=True):
            out[name] = None if value.has_failed else value.value
        return out

    def ledger(self) -> dict[str, Any]:
        text = self.read("LedgerJson")
        try:
            found = json.loads(text) if text else {}
        except json.JSONDecodeError:
            return {}
        return found if isinstance(found, dict) else {}

    # -- parameters -----------------------------------------------------------------------

    def parameter_names(self) -> list[str]:
        return [str(p) for p in (self.read("Parameters") or ())]

    def parameters(self) -> dict[str, Any]:
        names = self.parameter_names()
        out: dict[str, Any] = {}
        for name in names:
            try:
                out[name] = self.proxy.read_attribute(f"param_{name}").value
            except tango.DevFailed as exc:
                out[name] = f"<{describe(exc)}>"
        return out

    def set_parameter(self, name: str, text: str) -> Any:
        """Write ``param_NAME`` from text, converted to the attribute's type; returns the value."""
        names = self.parameter_names()
        if name not in names:
            raise PipelineError(
                f"pipeline {self.name} has no parameter {name!r} (it has: "
                f"{', '.join(names) or 'none'})"
            )
        attr = f"param_{name}"
        config = self._call(f"reading {attr}", self.proxy.get_attribute_config, attr)
        value = convert(text, config.data_type, name)
        self._call(f"writing {attr}", self.proxy.write_attribute, attr, value)
        return value


def _first(props: dict[str, Any], name: str, default: str = "") -> str:
    values = list(props.get(name) or [])
    return str(values[0]).strip() if values else default


def recorder_url(controller: str, stream: str) -> str:
    """Where Sardana's records of ``stream`` go: the ``http://host:port`` an ingester of the
    controller's pipeline listens on for that stream (its ``UpstreamUrl``, or the URL of a
    ``NAME:sardana=URL`` entry of ``Streams``), looked up in the Tango DB."""
    try:
        if controller.startswith("tango://"):  # tango://host:port/dom/fam/mem
            where, controller = controller[len("tango://") :].split("/", 1)
            host, _, port = where.rpartition(":")
            db = tango.Database(host, int(port))
        else:
            db = tango.Database()
        pipeline = _first(db.get_device_property(controller, "Pipeline"), "Pipeline", "default")
        found: list[tuple[str, str]] = []
        for name in sorted(str(n) for n in db.get_device_name("*", "DransposeIngester")):
            props = db.get_device_property(name, ["Pipeline", "Streams", "Protocol", "UpstreamUrl"])
            if _first(props, "Pipeline", "default") != pipeline:
                continue
            for entry in (str(e).strip() for e in props.get("Streams") or []):
                if entry == stream:
                    found.append((name, _first(props, "UpstreamUrl")))
                elif entry.startswith(f"{stream}:") and "=" in entry:
                    found.append((name, entry.split("=", 1)[1].strip()))
    except tango.DevFailed as exc:
        raise PipelineError(
            f"looking up the ingester of stream {stream}: {describe(exc)}"
        ) from None
    if not found:
        raise PipelineError(
            f"no DransposeIngester of pipeline {pipeline!r} serves stream {stream} "
            "(set DransposeSardanaUrl, or DransposeSardanaStream off)"
        )
    if len(found) > 1:
        names = ", ".join(n for n, _ in found)
        raise PipelineError(f"stream {stream} is served by several ingesters: {names}")
    name, url = found[0]
    base = url.split("?", 1)[0].rstrip("/")
    if not base.startswith("http://"):
        raise PipelineError(
            f"{name} serves stream {stream} from {url!r}, not an http:// address the recorder "
            "can post to"
        )
    host_port = base[len("http://") :]
    host, _, port = host_port.rpartition(":")
    if port in ("", "0"):
        raise PipelineError(
            f"{name} listens for stream {stream} on a free port ({url}); give its UpstreamUrl a "
            "fixed port, or set DransposeSardanaUrl"
        )
    if host in ("0.0.0.0", "", "*"):
        raise PipelineError(
            f"{name} listens for stream {stream} on every interface ({url}); set "
            "DransposeSardanaUrl to the address the MacroServer reaches it at"
        )
    return base


def convert(text: str, data_type: Any, name: str = "value") -> Any:
    """``text`` as the Tango type of a parameter attribute (numbers, booleans, strings)."""
    kind = tango.CmdArgType(int(data_type))
    try:
        if kind == tango.CmdArgType.DevBoolean:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind in (
            tango.CmdArgType.DevShort,
            tango.CmdArgType.DevLong,
            tango.CmdArgType.DevLong64,
            tango.CmdArgType.DevUShort,
            tango.CmdArgType.DevULong,
            tango.CmdArgType.DevULong64,
            tango.CmdArgType.DevUChar,
        ):
            return int(text)
        if kind in (tango.CmdArgType.DevDouble, tango.CmdArgType.DevFloat):
            return float(text)
    except ValueError:
        raise PipelineError(
            f"parameter {name}: {text!r} is not a {kind.name[3:].lower()}"
        ) from None
    if kind == tango.CmdArgType.DevEncoded:
        return ("raw", text.encode())
    return text


__all__ = ["ACTIVE", "FINAL", "Pipeline", "PipelineError", "convert", "describe", "recorder_url"]
