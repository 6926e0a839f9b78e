"""What a result file says about the scan besides the publish tree.

The reducer writes the payload's publish tree at the root of ``SCANID_processed.h5`` (as
dranspose does) and this record in the group ``tango_dranspose``: scan metadata, the trigger
map, the per-stream ledger, every parameter version with the events it covered, and the
software that computed it. The file is written whole to a temporary name and renamed, so a
reader never sees half of it; during long scans it is rewritten periodically (``complete``
says whether the scan had ended).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import h5py
import numpy as np

from tango_dranspose.core.ledger import StreamLedger

GROUP = "tango_dranspose"
LEDGER_COUNTS = (
    "expected",
    "delivered",
    "discarded",
    "missing",
    "dropped_slots",
    "not_received",
    "redispatched",
    "bytes",
)
_STR = h5py.string_dtype("utf-8")
_PACKAGES = ("tango-dranspose", "numpy", "h5py", "pyzmq", "pytango")


@dataclass
class VersionRecord:
    """One parameter version as the reducer saw it in a scan."""

    version: int
    hash: str
    values: dict[str, bytes]
    from_event: int = 0
    results: int = 0
    first_event: int | None = None
    last_event: int | None = None

    def count(self, event: int) -> None:
        self.results += 1
        self.first_event = event if self.first_event is None else min(self.first_event, event)
        self.last_event = event if self.last_event is None else max(self.last_event, event)


@dataclass
class ScanRecord:
    scan_id: str
    metadata: dict[str, Any]
    versions: dict[str, VersionRecord] = field(default_factory=dict)  # by hash
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounting: dict[str, Any] = field(default_factory=dict)
    end_reason: str | None = None


def software_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def _text(group: h5py.Group, name: str, value: Any) -> None:
    group.create_dataset(name, data=json.dumps(value, default=str, sort_keys=True), dtype=_STR)


def write_record(f: h5py.File, record: ScanRecord, complete: bool) -> None:
    """The ``tango_dranspose`` group of a result file (``f`` is open for writing)."""
    if GROUP in f:
        del f[GROUP]
    g = f.create_group(GROUP)
    g.attrs["scan_id"] = record.scan_id
    g.attrs["complete"] = complete
    g.attrs["end_reason"] = record.end_reason or ""
    g.attrs["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    soft = g.create_group("software")
    for name, version in software_versions().items():
        soft.attrs[name] = version
    meta = dict(record.metadata)
    tmap = meta.pop("trigger_map", None)
    meta.pop("worker_payloads", None)
    _text(g, "metadata", meta)
    if meta.get("title"):
        g.attrs["title"] = str(meta["title"])
    if tmap is not None:
        _text(g, "trigger_map", tmap)
    ledger = g.create_group("ledger")
    for stream, counts in sorted(record.ledger.items()):
        led = StreamLedger.model_validate(counts)
        s = ledger.create_group(stream)
        for key in LEDGER_COUNTS:
            s.attrs[key] = int(getattr(led, key))
        s.attrs["lost_total"] = led.lost_total
        for key in ("dropped", "lost", "drop_samples"):
            s.attrs[key] = json.dumps(getattr(led, key), sort_keys=True)
        s.attrs["upstream_error"] = led.upstream_error or ""
        s.attrs["interrupted_at"] = -1 if led.interrupted_at is None else led.interrupted_at
        s.attrs["not_received_events"] = led.not_received_events
    if record.accounting:
        _text(g, "accounting", record.accounting)
    params = g.create_group("parameters")
    for rec in sorted(record.versions.values(), key=lambda r: (r.from_event, r.version)):
        v = params.create_group(f"v{rec.version}")
        v.attrs["version"] = rec.version
        v.attrs["hash"] = rec.hash
        v.attrs["from_event"] = rec.from_event
        v.attrs["results"] = rec.results
        v.attrs["first_event"] = -1 if rec.first_event is None else rec.first_event
        v.attrs["last_event"] = -1 if rec.last_event is None else rec.last_event
        for name, raw in sorted(rec.values.items()):
            try:
                v.create_dataset(name, data=raw.decode("utf-8"), dtype=_STR)
            except UnicodeDecodeError:
                v.create_dataset(name, data=np.frombuffer(raw, dtype=np.uint8))
