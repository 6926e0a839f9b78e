"""The fast fuzz profile: FAST_CASES hypothesis cases per protocol, deterministic (seed 0).

A failure is shrunk by hypothesis to the smallest message sequence that still makes a framer
(or ``parse`` on an event it emitted, or ``detect``) raise; ``python -m tests.fuzz`` runs the
long profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tango_dranspose.core.capture import write_raw_capture
from tango_dranspose.sources.capture import CaptureSource, CaptureSpec
from tango_dranspose.streams import get_protocol, protocols
from tango_dranspose.streams.base import Framed
from tango_dranspose.streams.stream1 import Stream1Framer
from tests.fuzz.__main__ import main
from tests.fuzz.corpus import CAPTURES, corpus, protocol_names
from tests.fuzz.harness import fuzz_protocol, run_case

FAST_CASES = 500


@pytest.mark.parametrize("typ", protocol_names())
def test_framer_never_raises(typ: str) -> None:
    tally = fuzz_protocol(typ, FAST_CASES, seed=0, shrink=True)
    assert tally.escapes == []
    assert tally.cases >= FAST_CASES
    # The cases reached both sides of the framer: events out and counted drops.
    assert tally.events > 0 and sum(tally.drops.values()) > 0


def test_the_captures_seed_the_protocols_that_have_them(captures: Path) -> None:
    for typ, files in CAPTURES.items():
        assert corpus(typ).from_captures == bool(files), typ
    assert len(corpus("xspress").seeds) == 4  # builder + three captures


class ExplodingFramer(Stream1Framer):
    """A STINS framer with a bug: any image message makes it raise."""

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if message and b'"image"' in bytes(message[0]):
            raise ZeroDivisionError("a bug")
        return super().feed(message)


def break_stins(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dataclasses.replace(get_protocol("STINS"), framer=ExplodingFramer)
    monkeypatch.setitem(protocols(), "STINS", broken)


def test_the_harness_reports_what_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    break_stins(monkeypatch)
    seed = corpus("STINS", use_captures=False).seeds[0]
    outcome = run_case("STINS", [list(m) for m in seed.messages])
    assert outcome.escapes and isinstance(outcome.escapes[0].error, ZeroDivisionError)
    assert "ZeroDivisionError" in outcome.escapes[0].describe()
    tally = fuzz_protocol("STINS", 30, seed=0, use_captures=False)
    assert tally.exception_types["feed: ZeroDivisionError"] > 0


def test_the_command_fails_when_something_escapes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--cases", "20", "--seed", "1", "--protocol", "STINS", "--no-captures"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["protocol", "seeds", "cases"]
    assert "STINS" in table and "drops by reason" in table
    break_stins(monkeypatch)
    assert main(["--cases", "20", "--seed", "1", "--protocol", "STINS", "--no-captures"]) == 1
    out, err = capsys.readouterr()
    assert "feed: ZeroDivisionError" in out and "a bug" in err


def test_capture_playback_survives_a_framer_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = corpus("STINS", use_captures=False).seeds[0]
    path = tmp_path / "stins.cbors"
    write_raw_capture(path, [list(m) for m in seed.messages])
    break_stins(monkeypatch)
    source = CaptureSource(CaptureSpec(path, "cam", "STINS"))
    events = list(source.events())
    # Header and end get through; each image is one counted framer error.
    assert len(events) == 2
    assert source.drops.counts == {"framer error: ZeroDivisionError": 3}
