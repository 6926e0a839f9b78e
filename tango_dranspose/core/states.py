"""What a payload is told about the component it runs in (the ``state`` keyword)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ComponentState(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    scan_id: str | None = None
    parameters_hash: str | None = None


class WorkerState(ComponentState):
    tags: list[str] = ["generic"]


class ReducerState(ComponentState):
    name: str = "reducer"


class IngesterState(ComponentState):
    streams: list[str] = []
