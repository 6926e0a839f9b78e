"""Sardana's scan records as the ``sardana`` stream's posts, and a client that posts them.

The recorder (``recorders/dranspose_recorder.py``) hands this module plain values: the scan's
environment at its start, each record's ``data`` and the environment at its end. They become
the JSON objects of compat.md 5.8 (``DataDescription``, ``RecordData``, ``RecordEnd``), posted
to ``/v1/data_desc``, ``/v1/record_data`` and ``/v1/record_end`` of the ingester that serves the
stream, so that point *i*'s motor positions and counter values arrive in event *i*.

No Sardana here: tested against the ingester's own HTTP upstream.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MAX_ARRAY = 10_000
"""Arrays with more elements are posted as their shape and dtype only: images belong in the
detector streams (or value references), not in the Sardana records."""

ENDPOINTS = {
    "DataDescription": "/v1/data_desc",
    "RecordData": "/v1/record_data",
    "RecordEnd": "/v1/record_end",
}


def plain(value: Any) -> Any:
    """``value`` as JSON-safe data: numpy scalars and small arrays as numbers and lists,
    dates as text, non-finite floats as None, large arrays as ``{"shape", "dtype"}``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    to_dict = getattr(value, "toDict", None)  # Sardana's ColumnDesc
    if callable(to_dict):
        return plain(to_dict())
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and hasattr(value, "tolist"):  # numpy
        if getattr(value, "size", 0) > MAX_ARRAY:
            return {"shape": [int(n) for n in shape], "dtype": str(dtype)}
        return plain(value.tolist())
    if hasattr(value, "item"):
        return plain(value.item())
    return str(value)


def _first_of(env: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in env and env[name] is not None:
            return env[name]
    return None


def data_description(env: Mapping[str, Any]) -> dict[str, Any]:
    """The ``DataDescription`` post from the scan's environment at its start."""
    scan_file = _first_of(env, "ScanFile", "scanfile")
    if isinstance(scan_file, str):
        scan_file = [scan_file]
    start = _first_of(env, "starttime")
    return {
        "type": "DataDescription",
        "serialno": int(_first_of(env, "serialno") or 0),
        "scandir": str(_first_of(env, "ScanDir", "scandir") or ""),
        "title": str(_first_of(env, "title") or ""),
        "column_desc": plain(list(_first_of(env, "datadesc", "column_desc") or [])),
        "ref_moveables": plain(list(_first_of(env, "ref_moveables") or [])),
        "estimatedtime": plain(_first_of(env, "estimatedtime")),
        "total_scan_intervals": plain(_first_of(env, "total_scan_intervals")),
        "starttime": start.ctime() if isinstance(start, datetime.datetime) else plain(start),
        "counters": plain(list(_first_of(env, "counters") or [])),
        "scanfile": plain(list(scan_file or [])),
    }


def record_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """One point: every column by the name Sardana records it under."""
    values = {str(k): plain(v) for k, v in data.items()}
    values["point_nb"] = int(values.get("point_nb") or 0)
    timestamp = values.get("timestamp")
    values["timestamp"] = float(timestamp) if isinstance(timestamp, int | float) else 0.0
    return {"type": "RecordData", **values}


def record_end(env: Mapping[str, Any]) -> dict[str, Any]:
    end = _first_of(env, "endtime")
    return {
        "type": "RecordEnd",
        "endtime": end.ctime() if isinstance(end, datetime.datetime) else plain(end),
        "deadtime": plain(_first_of(env, "deadtime")),
    }


class PostError(RuntimeError):
    """A post was not accepted; the message says where and why."""


class Poster:
    """Posts JSON objects to the ingester at ``url`` (``http://host:port``) on one kept-alive
    connection; the ingester answers once the post is queued, so this waits when it is behind."""

    def __init__(self, url: str, timeout: float = 30.0, connect_for: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise PostError(f"{url!r} is not an http://host:port address")
        self.url = url
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self.connect_for = connect_for
        self.posted = 0
        self._conn: http.client.HTTPConnection | None = None

    def post(self, obj: Mapping[str, Any]) -> None:
        path = ENDPOINTS[str(obj["type"])]
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        deadline = time.monotonic() + self.connect_for
        while True:
            try:
                self._send(path, body)
                self.posted += 1
                return
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                self.close()
                # Just armed: the ingester may open its port a moment after the arm returns.
                if self.posted or time.monotonic() > deadline:
                    raise PostError(f"{self.url}{path}: the ingester does not answer") from None
                time.sleep(0.1)
            except OSError as exc:
                self.close()
                raise PostError(f"{self.url}{path}: {exc}") from None

    def _send(self, path: str, body: bytes) -> None:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        answer = response.read()
        if response.status != 200:
            try:
                reason = json.loads(answer).get("error", "")
            except (ValueError, AttributeError):
                reason = answer[:200].decode(errors="replace")
            raise PostError(f"{self.url}{path}: {response.status} {reason}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


__all__ = [
    "ENDPOINTS",
    "MAX_ARRAY",
    "PostError",
    "Poster",
    "data_description",
    "plain",
    "record_data",
    "record_end",
]
