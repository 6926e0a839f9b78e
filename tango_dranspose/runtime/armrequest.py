"""What a client sends to arm a scan: a trigger map, or a trigger map with the scan's metadata."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ArmRequest(BaseModel):
    """``{"map": ..., "scan_id": ..., "title": ..., "output_file": ..., ...}``."""

    model_config = ConfigDict(extra="forbid")

    map: Any = Field(description="the trigger map: one part, or {parts, sequence}")
    scan_id: str | None = Field(None, description="default: a new random id")
    title: str | None = None
    output_file: str | None = Field(None, description="where the reducer writes its result file")
    record_dir: str | None = Field(None, description="ingesters record dumps of this scan here")
    parameters: dict[str, Any] = Field(default_factory=dict, description="payload parameters")
    metadata: dict[str, Any] = Field(default_factory=dict, description="anything else (Sardana)")

    def scan_metadata(self) -> dict[str, Any]:
        meta = dict(self.metadata)
        if self.title is not None:
            meta["title"] = self.title
        if self.output_file is not None:
            meta["output"] = self.output_file
        return meta

    def parameter_bytes(self) -> dict[str, bytes]:
        out = {}
        for name, value in self.parameters.items():
            if isinstance(value, bytes):
                out[name] = value
            elif isinstance(value, bool):
                # dranspose's rule for booleans is the text "True"; JSON's ``true`` means it.
                out[name] = b"True" if value else b"False"
            elif isinstance(value, str):
                out[name] = value.encode()
            else:
                # Numbers and bools travel as their JSON text, as dranspose's parameters do.
                out[name] = json.dumps(value).encode()
        return out


def parse_arm_request(text: str | bytes) -> ArmRequest:
    """A bare trigger map, or an object with a ``map`` key and scan metadata beside it."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the arm request is not valid JSON: {exc}") from None
    return arm_request(obj)


def arm_request(obj: Any) -> ArmRequest:
    """The one reading of an arm request, whether it came as Tango ``Arm`` text or as a
    ZeroMQ client command (already decoded JSON)."""
    if not isinstance(obj, dict):
        raise ValueError(f"the arm request must be a JSON object, got {type(obj).__name__}")
    if "map" not in obj:
        return ArmRequest(map=obj)
    try:
        return ArmRequest.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise ValueError(f"arm request: {where}: {first['msg']}") from None
