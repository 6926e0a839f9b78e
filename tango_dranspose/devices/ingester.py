"""DransposeIngester: reads one upstream source and sends each event's frames to its workers."""

from __future__ import annotations

import time
from typing import Any

from tango import DevState
from tango.server import device_property

from tango_dranspose.devices.attrs import snap
from tango_dranspose.devices.base import Snapshot
from tango_dranspose.devices.service import ServiceDevice
from tango_dranspose.devices.status import dropped_total, ledger_lines
from tango_dranspose.runtime.ingester import IngesterService, StreamConfig


def stream_configs(streams: list[str], protocol: str, url: str) -> list[StreamConfig]:
    """``Streams`` entries are names (sharing ``Protocol`` and ``UpstreamUrl``) or full
    ``NAME:PROTOCOL=URL`` specs; raises ValueError naming the property to fix."""
    configs = []
    for entry in streams:
        entry = entry.strip()
        if not entry:
            continue
        if "=" in entry:
            configs.append(StreamConfig.parse(entry))
            continue
        if not protocol or not url:
            raise ValueError(
                f"stream {entry!r} needs the Protocol and UpstreamUrl properties "
                f"(or write it as NAME:PROTOCOL=URL)"
            )
        configs.append(StreamConfig.parse(f"{entry}:{protocol}={url}"))
    if not configs:
        raise ValueError("the Streams property is empty: name at least one stream")
    return configs


class DransposeIngester(ServiceDevice):
    """Connects its upstream while a scan is armed and forwards frames to the workers."""

    Streams = device_property(
        dtype=(str,),
        default_value=[],
        doc="Stream names (e.g. 'orca'), or full specs 'NAME:PROTOCOL=URL'",
    )
    Protocol = device_property(
        dtype=str,
        default_value="",
        doc="Protocol of the upstream (see 'tango-dranspose protocols'), e.g. STINS, PCAP",
    )
    UpstreamUrl = device_property(
        dtype=str,
        default_value="",
        doc="Where to read: pull+tcp://host:port, sub+tcp://..., tcp://... (PandA), "
        "http://host:port (Sardana recorder), file:///path (capture replay)",
    )
    RecordDir = device_property(
        dtype=str,
        default_value="",
        doc="If set, record every scan's upstream messages here (dump_DEVICE_SCANID.cbors)",
    )
    RetainMiB = device_property(
        dtype=int,
        default_value=512,
        doc="Frames kept, at most (MiB), to send again to another worker if the one they went "
        "to dies; events are released as soon as they are settled, so this bounds only "
        "placement groups that stay open long",
    )

    pushed = (
        "FramesReceived",
        "BytesReceived",
        "FrameRate",
        "ByteRate",
        "Connected",
        "DroppedMessages",
        "DropReasons",
        "Ledger",
    )

    StreamNames = snap("StreamNames", (str,), "The streams this ingester serves")
    FramesReceived = snap("FramesReceived", "int64", "Frames received since the server started")
    BytesReceived = snap(
        "BytesReceived", "int64", "Bytes received since the server started", unit="B"
    )
    FrameRate = snap("FrameRate", float, "Frames received per second", unit="frames/s")
    ByteRate = snap("ByteRate", float, "Data received per second", unit="MB/s")
    Connected = snap(
        "Connected",
        bool,
        "Whether every upstream is connected; upstreams connect only while a scan is armed, "
        "so an idle ingester shows False",
    )
    DroppedMessages = snap(
        "DroppedMessages", "int64", "Messages dropped in the current or last scan"
    )
    DropReasons = snap("DropReasons", (str,), "Per stream and reason: dropped count and a sample")
    Ledger = snap("Ledger", (str,), "Per stream: frames delivered, discarded, missing, dropped")

    def check_config(self) -> None:
        self._configs = stream_configs(list(self.Streams), self.Protocol, self.UpstreamUrl)
        self._last: tuple[float, int, int] | None = None
        self._rates = (0.0, 0.0)

    def make_service(self, scheduler: str) -> IngesterService:
        return IngesterService(
            self.get_name(),
            scheduler,
            self._configs,
            record_dir=self.RecordDir or None,
            retain_bytes=max(int(self.RetainMiB), 0) << 20,
        )

    def _update_rates(self, frames: int, nbytes: int) -> tuple[float, float]:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] >= 0.25:
            dt = now - self._last[0]
            self._rates = ((frames - self._last[1]) / dt, (nbytes - self._last[2]) / dt / 1e6)
            self._last = (now, frames, nbytes)
        elif self._last is None:
            self._last = (now, frames, nbytes)
        return self._rates

    def collect_service(self, svc: Any) -> Snapshot:
        c = svc.counters()
        ledger = c["ledger"]
        frame_rate, byte_rate = self._update_rates(int(c["frames"]), int(c["bytes"]))
        reasons = []
        for stream in sorted(ledger):
            samples = ledger[stream].get("drop_samples") or {}
            for reason, count in sorted((ledger[stream].get("dropped") or {}).items()):
                sample = samples.get(reason, "")
                reasons.append(
                    f"{stream}: {reason}: {count}" + (f" (e.g. {sample})" if sample else "")
                )
        connected = c["connected"]
        dropped = dropped_total(ledger)
        values = {
            "StreamNames": sorted(connected),
            "FramesReceived": int(c["frames"]),
            "BytesReceived": int(c["bytes"]),
            "FrameRate": frame_rate,
            "ByteRate": byte_rate,
            "Connected": bool(connected) and all(connected.values()),
            "DroppedMessages": dropped,
            "DropReasons": reasons,
            "Ledger": ledger_lines(ledger),
        }
        streams = ", ".join(sorted(connected))
        if svc.scan_active:
            state = DevState.RUNNING
            text = f"Armed: reading {streams}, {c['frames']} frames received since start."
        else:
            state = DevState.ON
            text = f"Idle, ready ({streams}); upstreams connect when a scan is armed."
        upstream_errors = [
            f"{s}: {v['upstream_error']}" for s, v in ledger.items() if v.get("upstream_error")
        ]
        # An outage while armed: the detector went away (ZeroMQ keeps trying to reconnect).
        upstream_errors += [
            f"{s}: not connected ({why})" for s, why in sorted((c.get("outages") or {}).items())
        ]
        if dropped or upstream_errors:
            state = DevState.ALARM
            if dropped:
                text += f" {dropped} messages dropped in this scan: {'; '.join(reasons[:3])}."
            if upstream_errors:
                text += f" Upstream problems: {'; '.join(upstream_errors)}."
        return Snapshot(state, text, values)
