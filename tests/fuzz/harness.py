"""Running fuzz cases through a protocol's framer (and its ``parse``) and tallying outcomes."""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from tango_dranspose.streams import get_protocol
from tango_dranspose.streams.base import Framed, ParseError
from tests.fuzz.corpus import Message, corpus
from tests.fuzz.mutations import fuzz_case

# Hypothesis settings shared by the suite and the long command: no example database (it
# would write .hypothesis/ into the work tree), no deadline (a 1.3 MB LeCroy trace takes
# longer than the default 200 ms on a loaded machine), no health checks about slow draws.
BASE = settings(
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@dataclass
class Escape:
    """An exception that got out of the framer (or of ``parse``, on an event it emitted)."""

    where: str
    error: BaseException
    messages: list[Message]

    def describe(self) -> str:
        tb = "".join(traceback.format_exception(self.error, limit=-4))
        sizes = [[len(frame) for frame in message] for message in self.messages]
        return f"{self.where}: {type(self.error).__name__} (frame sizes {sizes})\n{tb}"


@dataclass
class Outcome:
    events: int = 0
    parse_errors: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    escapes: list[Escape] = field(default_factory=list)


def run_case(typ: str, messages: Sequence[Message]) -> Outcome:
    """Feed ``messages`` to a fresh framer of ``typ``, flush it, and parse what it emitted.

    Drops are the framer's business (it counts them). An escape is any exception from
    ``feed``, ``flush`` or ``detect`` (which sniffs files and must not raise either), and any
    but :class:`ParseError` from ``parse`` on an emitted event (workers call it).
    """
    proto = get_protocol(typ)
    framer = proto.framer()
    outcome = Outcome()
    emitted: list[Framed] = []
    for message in messages:
        try:
            proto.framer.detect(message)
        except Exception as exc:
            outcome.escapes.append(Escape(f"{typ} detect", exc, list(messages)))
    steps: list[tuple[str, Callable[[], Any]]] = [
        *(("feed", lambda m=m: framer.feed(m)) for m in messages),
        ("flush", framer.flush),
    ]
    for where, step in steps:
        try:
            result = step()
        except Exception as exc:
            outcome.escapes.append(Escape(f"{typ} {where}", exc, list(messages)))
            continue
        if not isinstance(result, list) or not all(isinstance(f, Framed) for f in result):
            error = TypeError(f"returned {type(result).__name__}, not a list of Framed")
            outcome.escapes.append(Escape(f"{typ} {where}", error, list(messages)))
            continue
        emitted += result
    outcome.events = len(emitted)
    for framed in emitted:
        try:
            proto.parse(framed.data)
        except ParseError:
            outcome.parse_errors += 1
        except Exception as exc:
            outcome.escapes.append(Escape(f"{typ} parse", exc, list(messages)))
    outcome.drops = dict(framer.drops.counts)
    return outcome


@dataclass
class Tally:
    """Everything the fuzzing of one protocol did."""

    typ: str
    seeds: int = 0
    from_captures: bool = False
    cases: int = 0
    events: int = 0
    parse_errors: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    escapes: list[Escape] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.cases += 1
        self.events += outcome.events
        self.parse_errors += outcome.parse_errors
        self.drops.update(outcome.drops)
        self.escapes += outcome.escapes

    @property
    def exception_types(self) -> Counter[str]:
        return Counter(f"{e.where.split()[-1]}: {type(e.error).__name__}" for e in self.escapes)


def fuzz_protocol(
    typ: str,
    cases: int,
    *,
    seed: int | None = None,
    use_captures: bool = True,
    shrink: bool = False,
) -> Tally:
    """Run ``cases`` hypothesis cases against ``typ``'s framer and count what happened.

    Escapes are collected, not raised, so that one run shows every kind of failure; with
    ``shrink`` the first escape is raised instead, for hypothesis to minimise it.
    """
    source = corpus(typ, use_captures)
    tally = Tally(typ, len(source.seeds), source.from_captures)
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @settings(BASE, max_examples=cases, phases=phases)
    @given(fuzz_case(source))
    def one(messages: list[Message]) -> None:
        outcome = run_case(typ, messages)
        tally.add(outcome)
        if shrink and outcome.escapes:
            raise outcome.escapes[0].error

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    started = time.perf_counter()
    one()
    tally.seconds = time.perf_counter() - started
    return tally
