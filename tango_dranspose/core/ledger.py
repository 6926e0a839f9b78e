"""The scan's bookkeeping of frames: one typed ledger per stream, merged from every service.

Every frame the trigger map expects of a stream ends in exactly one outcome:

* ``delivered``: sent to the worker(s) the map named (once; a re-dispatch is counted apart);
* ``discarded``: read and thrown away, as the map asked (``[]`` cells);
* ``missing``: the upstream ended (end message or closed) before the frame came;
* ``dropped_slots``: the upstream ended early *because* the framer dropped messages inside
  the scan (malformed ones): the frames those messages should have been;
* ``not_received``: the scan ended (stopped, aborted, failed) before the frame was read;
* ``lost``: delivered to a worker that died and could not be sent again (by reason).

so that ``delivered + discarded + missing + dropped_slots + not_received + lost == expected``
(:meth:`StreamLedger.balance`). Beside the outcomes it counts the messages the framer dropped
(``dropped``, by reason, with a sample each: before the start, after the end, malformed),
frames sent again to a live worker (``redispatched``), bytes, and where the stream was cut.
Pure data: the ingester fills it, the scheduler merges and completes it, the result file and
the devices show it, the replay uses it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Drops of messages outside a scan's window (or of another series) do not explain a missing
# frame.
OUTSIDE_SCAN = frozenset(
    {"before the start message", "after the end message", "start message inside a running scan"}
)


class StreamLedger(BaseModel):
    """One stream's counts in one scan."""

    model_config = ConfigDict(extra="ignore")

    expected: int = 0
    delivered: int = 0
    discarded: int = 0
    missing: int = 0
    dropped_slots: int = 0
    not_received: int = 0
    lost: dict[str, int] = Field(default_factory=dict)
    dropped: dict[str, int] = Field(default_factory=dict)
    drop_samples: dict[str, str] = Field(default_factory=dict)
    redispatched: int = 0
    bytes: int = 0
    upstream_error: str | None = None
    # The upstream started a new series inside the scan at this frame of the stream (0-based
    # count of the frames read before it); the stream ended there.
    interrupted_at: int | None = None
    not_received_events: str = ""  # event numbers, as ranges ("12-40, 45")

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def dropped_in_scan(self) -> int:
        return sum(n for reason, n in self.dropped.items() if reason not in OUTSIDE_SCAN)

    @property
    def accounted(self) -> int:
        """Frames with an outcome."""
        return (
            self.delivered
            + self.discarded
            + self.missing
            + self.dropped_slots
            + self.not_received
            + self.lost_total
        )

    def balance(self) -> int:
        """``accounted - expected``: 0 when every expected frame has exactly one outcome."""
        return self.accounted - self.expected

    def lose(self, n: int, reason: str) -> None:
        """``n`` delivered frames turned out lost (their worker died, no copy was left)."""
        n = min(n, self.delivered)
        if n <= 0:
            return
        self.delivered -= n
        self.lost[reason] = self.lost.get(reason, 0) + n

    def end_upstream(self, empty: int) -> None:
        """The upstream ended with ``empty`` assigned frames still to come: those the framer's
        in-scan drops explain are ``dropped_slots``, the rest ``missing``."""
        explained = max(min(self.dropped_in_scan - self.dropped_slots, empty), 0)
        self.dropped_slots += explained
        self.missing += empty - explained

    def complete(self, expected: int) -> None:
        """At the end of a scan: what has no outcome yet was not received."""
        self.expected = expected
        self.not_received = 0
        self.not_received = max(expected - self.accounted, 0)

    def merge(self, other: StreamLedger) -> None:
        """Add ``other``'s counts (the same stream seen by another service)."""
        for name in (
            "expected",
            "delivered",
            "discarded",
            "missing",
            "dropped_slots",
            "not_received",
            "redispatched",
            "bytes",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.lost.items():
            self.lost[reason] = self.lost.get(reason, 0) + n
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
            self.drop_samples.setdefault(reason, other.drop_samples.get(reason, ""))
        self.upstream_error = self.upstream_error or other.upstream_error
        if other.interrupted_at is not None:
            self.interrupted_at = (
                other.interrupted_at
                if self.interrupted_at is None
                else min(self.interrupted_at, other.interrupted_at)
            )

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


Ledger = dict[str, StreamLedger]


def load_ledger(raw: Mapping[str, Any] | None) -> Ledger:
    """A ledger from its JSON form (what control messages and attributes carry)."""
    out: Ledger = {}
    for stream, counts in (raw or {}).items():
        out[str(stream)] = (
            counts if isinstance(counts, StreamLedger) else StreamLedger.model_validate(counts)
        )
    return out


def dump_ledger(ledger: Mapping[str, StreamLedger]) -> dict[str, dict[str, Any]]:
    return {stream: led.as_dict() for stream, led in sorted(ledger.items())}


def totals(ledger: Mapping[str, StreamLedger]) -> StreamLedger:
    """Every stream's counts added up (its ``upstream_error`` is the first stream's)."""
    total = StreamLedger()
    for led in ledger.values():
        total.merge(led)
    return total


def ranges(numbers: Iterable[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` as ``"1-3, 7, 9-10"``: event lists people can read."""
    out: list[str] = []
    start = prev = None
    for n in sorted(set(numbers)):
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(out)
