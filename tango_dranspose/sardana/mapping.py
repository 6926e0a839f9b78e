"""The trigger map and ``Arm`` request of a Sardana scan, derived from a plain description.

No Sardana here: the macros (``dranspose_macros``) read the scan about to run into a
:class:`ScanInfo` and the MacroServer environment into :class:`PipelineSettings`;
:func:`plan_arm` turns both into an :class:`ArmPlan`, the JSON request for the controller's
``Arm`` command, or the reason why nothing is armed.

Events. Every scan point gives ``E`` events, ``E`` being the most frames any pipeline stream
produces per point (1 for the usual one frame per trigger). A stream with ``k`` frames per point
has them at every ``E // k``-th event of the point (``k`` must divide ``E``); the Sardana stream
(one record per point) is in the point's first event. The map has one part, ``point``, repeated
once per point, so a scan of 100 000 points is a map of ``E`` rows; all frames of one point go
to one worker (constraint ``0`` of each occurrence) unless ``constraint`` is ``"event"``. With
the start/end wrap (on by default) the scan has ``points * E + 2`` events.

Points. Sardana's scan macros say how many points they record (``nb_points``); a continuous
mesh (``meshct``) says it per line, and the lines are ``m2_nr_interv + 1``. Continuous software
scans (``ascanc``, ``meshc``) record as many points as the motion allows: no map can be made
before the scan, and :func:`plan_arm` says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tango_dranspose.core.triggermap import TriggerMap, TriggerMapError

ScanKind = Literal["step", "mesh", "continuous", "continuous-mesh", "time", "unknown-length"]
POINT_PART = "point"
DEFAULT_TAGS: tuple[str, ...] = ("generic",)

# Macros whose kind the name alone does not tell (the rest: see scan_kind).
_KINDS: dict[str, ScanKind] = {
    "mesh": "mesh",
    "dmesh": "mesh",
    "meshct": "continuous-mesh",
    "dmeshct": "continuous-mesh",
    "meshc": "unknown-length",
    "dmeshc": "unknown-length",
    "timescan": "time",
}


class MappingError(ValueError):
    """The scan or the settings cannot give a trigger map; the message says why."""


@dataclass(frozen=True)
class Channel:
    """A channel of the scan's measurement group: ``label`` as the scan shows it (the alias by
    default), ``name`` the full name Sardana records it under (``tango://.../expchan/x/1``)."""

    label: str
    name: str = ""
    alias: str = ""

    def names(self) -> tuple[str, ...]:
        """Every name a setting may use for this channel: label, alias, full and device name."""
        found = [self.label, self.alias]
        if self.name:
            found.append(self.name)
            if self.name.startswith("tango://"):
                found.append(self.name.split("/", 3)[-1])  # tango://host:port/dom/fam/mem
        return tuple(dict.fromkeys(k for k in found if k))


@dataclass(frozen=True)
class Motor:
    name: str
    start: float | None = None
    final: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "final": self.final}


@dataclass(frozen=True)
class ScanInfo:
    """What the pre-scan hook knows of the scan about to run (plain values only)."""

    macro: str
    nb_points: int | None
    scan_id: int | str | None = None
    title: str = ""
    motors: Sequence[Motor] = ()
    integ_time: float | None = None
    nr_intervs: Sequence[int] = ()  # mesh macros: intervals per motor
    scan_dir: str | None = None
    scan_file: Sequence[str] = ()
    measurement_group: str = ""
    channels: Sequence[Channel] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # macro_id, user, door, ...


@dataclass(frozen=True)
class StreamSpec:
    """A pipeline stream fed by a measurement-group channel."""

    stream: str
    frames_per_point: int = 1
    channel: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "frames_per_point": self.frames_per_point,
            "channel": self.channel,
        }


@dataclass(frozen=True)
class PipelineSettings:
    """The MacroServer environment, parsed (see ``docs/sardana.md`` for the variables).

    ``streams``: channel (label, full or device name) -> stream. ``None``: every channel whose
    label is a stream the pipeline serves (``available``) is that stream, one frame per point.
    ``sardana_stream``: the stream of Sardana's own records, ``None`` for none; it is used only
    if the pipeline serves it (when ``available`` is known).
    """

    streams: Mapping[str, StreamSpec] | None = None
    sardana_stream: str | None = "sardana"
    available: Sequence[str] | None = None
    wrap: bool = True
    constraint: Literal["point", "event"] = "point"
    tags: Sequence[str] = DEFAULT_TAGS
    parameters: Mapping[str, Any] = field(default_factory=dict)
    record_dir: str | None = None


@dataclass(frozen=True)
class ArmPlan:
    """What to arm: ``request`` is the ``Arm`` JSON object, or None with ``reason``."""

    request: dict[str, Any] | None
    reason: str
    streams: tuple[StreamSpec, ...] = ()
    points: int = 0
    events: int = 0
    sardana_stream: str | None = None  # in the map: the recorder must feed it

    @property
    def armed(self) -> bool:
        return self.request is not None

    def request_json(self) -> str:
        if self.request is None:
            raise MappingError(self.reason)
        return json.dumps(self.request, separators=(",", ":"))


# --- settings from the environment ----------------------------------------------------------


def parse_streams(value: Any) -> dict[str, StreamSpec] | None:
    """The ``DransposeStreams`` variable: ``None``/unset (match channels by stream name), a list
    of channel names (stream = channel), or a dict channel -> stream name, or channel ->
    ``{"stream": NAME, "frames_per_point": K}``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = [v for v in text.replace(",", " ").split() if v]
    out: dict[str, StreamSpec] = {}
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str) or not item:
                raise MappingError(f"DransposeStreams: {item!r} is not a channel name")
            out[item] = StreamSpec(item, 1, item)
        return out
    if not isinstance(value, Mapping):
        raise MappingError(
            f"DransposeStreams must be a dict channel -> stream, got {type(value).__name__}"
        )
    for channel, spec in value.items():
        if isinstance(spec, str):
            out[str(channel)] = StreamSpec(spec, 1, str(channel))
            continue
        if not isinstance(spec, Mapping) or not isinstance(spec.get("stream", channel), str):
            raise MappingError(
                f"DransposeStreams[{channel!r}]: expected a stream name or "
                f'{{"stream": NAME, "frames_per_point": K}}, got {spec!r}'
            )
        unknown = set(spec) - {"stream", "frames_per_point"}
        if unknown:
            raise MappingError(f"DransposeStreams[{channel!r}]: unknown keys {sorted(unknown)}")
        frames = spec.get("frames_per_point", 1)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise MappingError(
                f"DransposeStreams[{channel!r}]: frames_per_point must be a positive integer, "
                f"got {frames!r}"
            )
        out[str(channel)] = StreamSpec(str(spec.get("stream", channel)), frames, str(channel))
    return out


def parse_bool(name: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise MappingError(f"{name} must be True or False, got {value!r}")


# --- the scan -----------------------------------------------------------------------------


def scan_kind(macro: str) -> ScanKind:
    """Step, mesh, continuous (hardware-timed, ``...ct``), time, or unknown-length
    (continuous software scans ``...scanc``, ``meshc``)."""
    name = macro.strip()
    if name in _KINDS:
        return _KINDS[name]
    if name.endswith("scanct"):
        return "continuous"
    if name.endswith("scanc"):
        return "unknown-length"
    return "step"


def scan_points(info: ScanInfo) -> int:
    """Points the scan records; raises :class:`MappingError` when it cannot be known."""
    kind = scan_kind(info.macro)
    if kind == "unknown-length":
        raise MappingError(
            f"{info.macro} records as many points as the motion allows, so the pipeline "
            "cannot be armed before it (use the hardware-timed ...ct scan instead)"
        )
    if info.nb_points is None:
        raise MappingError(f"{info.macro} does not say how many points it records")
    points = int(info.nb_points)
    if kind == "continuous-mesh":
        if len(info.nr_intervs) < 2:
            raise MappingError(f"{info.macro}: the intervals of the second motor are not known")
        points *= abs(int(info.nr_intervs[1])) + 1
    if points < 1:
        raise MappingError(f"{info.macro} records no point ({points})")
    return points


def mesh_shape(info: ScanInfo) -> list[int] | None:
    """Mesh scans: [lines, points per line] (the first motor moves fastest)."""
    kind = scan_kind(info.macro)
    if kind == "mesh" and len(info.nr_intervs) >= 2:
        return [abs(int(info.nr_intervs[1])) + 1, abs(int(info.nr_intervs[0])) + 1]
    if kind == "continuous-mesh" and len(info.nr_intervs) >= 2 and info.nb_points:
        return [abs(int(info.nr_intervs[1])) + 1, int(info.nb_points)]
    return None


def select_streams(
    channels: Sequence[Channel],
    configured: Mapping[str, StreamSpec] | None,
    available: Sequence[str] | None,
) -> list[StreamSpec]:
    """The measurement group's channels that are pipeline streams, in channel order."""
    found: list[StreamSpec] = []
    for channel in channels:
        if configured is None:
            match = next(
                (n for n in (channel.label, channel.alias) if n in (available or ())), None
            )
            if match:
                found.append(StreamSpec(match, 1, channel.label))
            continue
        for key in channel.names():
            spec = configured.get(key)
            if spec is not None:
                found.append(StreamSpec(spec.stream, spec.frames_per_point, channel.label))
                break
    seen: dict[str, StreamSpec] = {}
    for spec in found:
        if spec.stream in seen:
            raise MappingError(
                f"channels {seen[spec.stream].channel} and {spec.channel} are both stream "
                f"{spec.stream}; a stream has one source"
            )
        seen[spec.stream] = spec
    return found


def events_per_point(streams: Iterable[StreamSpec]) -> int:
    per_point = max((s.frames_per_point for s in streams), default=1)
    for spec in streams:
        if per_point % spec.frames_per_point:
            raise MappingError(
                f"stream {spec.stream} gives {spec.frames_per_point} frames per point and "
                f"another {per_point}: the counts must divide each other"
            )
    return per_point


def trigger_map(
    points: int,
    streams: Sequence[StreamSpec],
    *,
    sardana_stream: str | None = None,
    wrap: bool = True,
    constraint: Literal["point", "event"] = "point",
    tags: Sequence[str] = DEFAULT_TAGS,
) -> dict[str, Any]:
    """The trigger map of ``points`` points (JSON object, ``docs/trigger-maps.md``)."""
    if points < 1:
        raise MappingError(f"a scan of {points} points has no event")
    if not streams and not sardana_stream:
        raise MappingError("no stream to map")
    names = [s.stream for s in streams]
    if sardana_stream and sardana_stream in names:
        raise MappingError(f"stream {sardana_stream} is both a channel and the Sardana stream")
    if not tags or not all(isinstance(t, str) and t for t in tags):
        raise MappingError(f"worker tags must be non-empty names, got {list(tags)!r}")
    per_point = events_per_point(streams)
    tag_list = sorted(set(tags))

    def cell(offset: int) -> list[dict[str, Any]]:
        return [{"constraint": 0 if constraint == "point" else offset, "tags": tag_list}]

    part: dict[str, list[Any]] = {}
    for spec in streams:
        stride = per_point // spec.frames_per_point
        part[spec.stream] = [cell(i) if i % stride == 0 else None for i in range(per_point)]
    if sardana_stream:
        part[sardana_stream] = [cell(i) if i == 0 else None for i in range(per_point)]
    tmap: dict[str, Any] = {"parts": {POINT_PART: part}, "sequence": [POINT_PART] * points}
    if not wrap:
        tmap["wrap"] = False
    return tmap


def count_events(tmap: Mapping[str, Any]) -> int:
    """Events of a map, the wrap included (validates the map as the controller would)."""
    try:
        return len(TriggerMap.from_json(dict(tmap)))
    except TriggerMapError as exc:
        raise MappingError(f"invalid trigger map: {exc}") from None


def scan_metadata(info: ScanInfo, streams: Sequence[StreamSpec], points: int) -> dict[str, Any]:
    """The ``metadata`` of the ``Arm`` request: what the result file and the GUI show."""
    meta: dict[str, Any] = {
        "source": "sardana",
        "scan_id": info.scan_id,
        "title": info.title,
        "macro": info.macro,
        "kind": scan_kind(info.macro),
        "motors": [m.to_json() for m in info.motors],
        "points": points,
        "integ_time": info.integ_time,
        "measurement_group": info.measurement_group,
        "channels": [c.label for c in info.channels],
        "streams": {s.stream: s.to_json() for s in streams},
    }
    shape = mesh_shape(info)
    if shape is not None:
        meta["shape"] = shape
    # The reducer writes its result file beside the raw data when both are set.
    if info.scan_dir:
        meta["scan_dir"] = info.scan_dir
    if info.scan_file:
        meta["scan_file"] = list(info.scan_file)
    for key, value in info.extra.items():
        meta.setdefault(str(key), value)
    return meta


def plan_arm(info: ScanInfo, settings: PipelineSettings) -> ArmPlan:
    """The ``Arm`` request for the scan, or why nothing is armed.

    Nothing is armed (``request`` None) when no channel of the measurement group is a
    pipeline stream: the Sardana stream alone is no reason to run the pipeline. A scan whose
    length cannot be known, or settings that cannot work, raise :class:`MappingError`.
    """
    streams = select_streams(info.channels, settings.streams, settings.available)
    if not streams:
        labels = ", ".join(c.label for c in info.channels) or "none"
        if settings.streams is None:
            served = ", ".join(settings.available or ()) or "none"
            how = (
                f"no channel is named as a stream the pipeline serves ({served}); "
                "map channels to streams with DransposeStreams"
            )
        else:
            how = f"DransposeStreams names none of them ({', '.join(settings.streams)})"
        return ArmPlan(
            None,
            f"measurement group {info.measurement_group or '?'} has no pipeline stream "
            f"(channels: {labels}): {how}; the pipeline is not armed",
        )
    if settings.available is not None:
        missing = [s.stream for s in streams if s.stream not in settings.available]
        if missing:
            raise MappingError(
                f"the pipeline serves no stream {', '.join(missing)} "
                f"(it serves: {', '.join(settings.available) or 'none'})"
            )
    points = scan_points(info)
    sardana = settings.sardana_stream or None
    if sardana and settings.available is not None and sardana not in settings.available:
        sardana = None
    tmap = trigger_map(
        points,
        streams,
        sardana_stream=sardana,
        wrap=settings.wrap,
        constraint=settings.constraint,
        tags=settings.tags,
    )
    events = count_events(tmap)
    all_streams = tuple(streams) + (
        (StreamSpec(sardana, 1, "(sardana records)"),) if sardana else ()
    )
    request: dict[str, Any] = {
        "map": tmap,
        "title": info.title or info.macro,
        "metadata": scan_metadata(info, all_streams, points),
    }
    if info.scan_id is not None:
        request["scan_id"] = str(info.scan_id)
    if settings.parameters:
        request["parameters"] = dict(settings.parameters)
    if settings.record_dir:
        request["record_dir"] = settings.record_dir
    names = ", ".join(
        f"{s.stream}" + (f" ({s.frames_per_point}/point)" if s.frames_per_point > 1 else "")
        for s in all_streams
    )
    return ArmPlan(
        request,
        f"{points} points, {events} events, streams {names}",
        all_streams,
        points,
        events,
        sardana,
    )


__all__ = [
    "ArmPlan",
    "Channel",
    "MappingError",
    "Motor",
    "PipelineSettings",
    "ScanInfo",
    "StreamSpec",
    "count_events",
    "events_per_point",
    "mesh_shape",
    "parse_bool",
    "parse_streams",
    "plan_arm",
    "scan_kind",
    "scan_metadata",
    "scan_points",
    "select_streams",
    "trigger_map",
]
