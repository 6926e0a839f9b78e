"""Control messages between the scheduler and the services (ingester, worker, reducer).

They travel as JSON over one ROUTER/DEALER pair per service and are never per event: work is
handed out and acknowledged in batches. Data (frames, results) travels on separate sockets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


# --- service -> scheduler ---------------------------------------------------------------


class Hello(Message):
    """A service announces itself (again after a restart)."""

    op: Literal["hello"] = "hello"
    kind: Literal["ingester", "worker", "reducer"]
    name: str
    address: str | None = None  # where it receives data (workers, reducer)
    streams: list[str] = []  # ingesters
    tags: list[str] = []  # workers
    parameters: list[dict[str, Any]] = []  # descriptions of the payload's parameters
    payload: str | None = None  # "package.module:Class" of a worker or reducer
    pid: int = 0


class Armed(Message):
    op: Literal["armed"] = "armed"
    scan: int
    ok: bool = True
    error: str | None = None
    tick_interval: float | None = None  # workers: the payload's get_tick_interval


class Done(Message):
    """A worker finished events: ``[event, produced_a_result, seq]``; a result went out in
    the worker's results message ``seq`` (-1: no result)."""

    op: Literal["done"] = "done"
    scan: int
    events: list[tuple[int, bool, int]]
    errors: int = 0
    last_error: str | None = None
    lost: int = 0  # events whose frames could not be sent again after a worker died
    results_lost: int = 0  # results not delivered: the reducer was gone


class Ingested(Message):
    """An ingester handled every event up to ``upto`` (sent, discarded or missing)."""

    op: Literal["ingested"] = "ingested"
    scan: int
    upto: int
    ledger: dict[str, dict[str, Any]] = {}


class Reduced(Message):
    op: Literal["reduced"] = "reduced"
    scan: int
    results: int
    errors: int = 0
    last_error: str | None = None
    # worker -> the last of its results messages received (each worker numbers its own)
    received: dict[str, int] = {}


class Finished(Message):
    op: Literal["finished"] = "finished"
    scan: int
    kind: str
    summary: dict[str, Any] = {}


class ParametersApplied(Message):
    """A worker processed its first event with a parameter version."""

    op: Literal["applied"] = "applied"
    scan: int
    version: int
    event: int


class Status(Message):
    """Periodic liveness and counters."""

    op: Literal["status"] = "status"
    counters: dict[str, Any] = {}


# --- scheduler -> service ---------------------------------------------------------------


class Arm(Message):
    op: Literal["arm"] = "arm"
    scan: int
    scan_id: str
    workers: dict[str, str] = {}  # name -> data address
    reducer: str | None = None  # reducer data address
    parameters: dict[str, str] = {}  # name -> raw value (latin-1 text of the bytes)
    parameters_hash: str = ""
    parameters_version: int = 0
    # Every payload's parameter descriptions: a reducer types the workers' parameters too.
    descriptions: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {}
    record_dir: str | None = None
    window: int = 32
    total_events: int = 0
    streams: list[str] = []  # the streams of the map this service handles


class Assign(Message):
    """Ingesters: ``[event, {stream: [worker, ...]}]`` ([] = read and discard)."""

    op: Literal["assign"] = "assign"
    scan: int
    events: list[tuple[int, dict[str, list[str]]]]
    # Frames of events below this are settled: the ingester need not keep them any longer.
    release: int = -1


class Expect(Message):
    """Workers: ``[event, [stream, ...], tick]`` in the order they must be processed."""

    op: Literal["expect"] = "expect"
    scan: int
    events: list[tuple[int, list[str], bool]]
    # Events sent again after a worker died: event -> the worker whose results they replace
    # (the reducer keeps one result per event and origin).
    origins: dict[int, str] = {}


class Resend(Message):
    """Ingesters: workers died. Send these events' frames again to the new workers (from the
    frames kept, or when they are read), forget the dead ones, reach the new ones here."""

    op: Literal["resend"] = "resend"
    scan: int
    events: list[tuple[int, dict[str, list[str]]]] = []
    workers: dict[str, str] = {}  # name -> data address
    dead: list[str] = []


class Finish(Message):
    op: Literal["finish"] = "finish"
    scan: int
    reason: str = "complete"  # complete | stopped | aborted | failed | interrupted
    expected_results: int | None = None
    ledger: dict[str, dict[str, Any]] = {}  # reducer: for the result file
    accounting: dict[str, Any] = {}  # reducer: the scan's event accounting, for the file


class SetParameters(Message):
    """New parameter values for events from ``from_event`` on (workers switch there)."""

    op: Literal["parameters"] = "parameters"
    scan: int
    version: int
    hash: str
    parameters: dict[str, str]  # all values, latin-1 text of the bytes
    from_event: int


class Welcome(Message):
    op: Literal["welcome"] = "welcome"
    scan: int = 0


class Seen(Message):
    """The answer to a status report: lets a service tell that its scheduler is there."""

    op: Literal["seen"] = "seen"


ToScheduler = Annotated[
    Hello | Armed | Done | Ingested | Reduced | Finished | Status | ParametersApplied,
    Field(discriminator="op"),
]
ToService = Annotated[
    Arm | Assign | Expect | Resend | Finish | Welcome | Seen | SetParameters,
    Field(discriminator="op"),
]

# One pydantic-core call parses and validates a message (several are handled per event).
_TO_SCHEDULER: TypeAdapter[Message] = TypeAdapter(ToScheduler)
_TO_SERVICE: TypeAdapter[Message] = TypeAdapter(ToService)


class ProtocolError(ValueError):
    """A control message that does not parse."""


def _load(raw: bytes, adapter: TypeAdapter[Message]) -> Message:
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ProtocolError(
            f"invalid control message {raw[:80]!r}: {where}: {first['msg']}"
        ) from None


def load_to_scheduler(raw: bytes) -> Message:
    return _load(raw, _TO_SCHEDULER)


def load_to_service(raw: bytes) -> Message:
    return _load(raw, _TO_SERVICE)


def encode_parameters(raw: dict[str, bytes]) -> dict[str, str]:
    # latin-1 maps every byte to one code point, so binary parameters survive JSON.
    return {k: v.decode("latin-1") for k, v in raw.items()}


def decode_parameters(raw: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode("latin-1") for k, v in raw.items()}
