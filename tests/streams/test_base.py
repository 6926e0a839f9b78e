"""What every framer relies on: JSON decoding limits, drop counting, safe_feed/safe_flush."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from tango_dranspose.streams.base import (
    MAX_JSON_DEPTH,
    MAX_REASON_LENGTH,
    MAX_REASONS,
    OTHER_REASONS,
    DropCounter,
    Framed,
    Framer,
    Kind,
    ParseError,
    decode_json,
    load_json,
    safe_feed,
    safe_flush,
)
from tango_dranspose.streams.stream1 import Stream1Framer, build_end, build_header


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def test_json_nesting_up_to_the_limit_is_fine() -> None:
    value = decode_json(nested(MAX_JSON_DEPTH))
    for _ in range(MAX_JSON_DEPTH - 1):
        value = value[0]
    assert value == []


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 200_000])
def test_deeper_json_is_a_parse_error(depth: int) -> None:
    with pytest.raises(ParseError, match="nested"):
        decode_json(nested(depth), "STINS message")


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"htype": "header", "title": "[" * 500}).encode()
    assert decode_json(text)["title"] == "[" * 500


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"1" * 5000, "not valid JSON"),  # more digits than Python converts
        (b"\xff\xfe{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_other_bad_json_is_a_parse_error(raw: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        load_json(raw)


def test_load_json_of_something_that_is_no_frame() -> None:
    with pytest.raises(ParseError, match="not a frame"):
        load_json(12)


# -- drop counting ---------------------------------------------------------------------------


def test_long_reasons_are_cut() -> None:
    drops = DropCounter()
    drops.add("unknown htype " + "x" * 10_000)
    (reason,) = drops.counts
    assert len(reason) == MAX_REASON_LENGTH and reason.endswith("...")


def test_ever_new_reasons_are_counted_together_past_the_limit() -> None:
    drops = DropCounter()
    new = [drops.add(f"unknown htype {i}") for i in range(MAX_REASONS + 50)]
    assert len(drops.counts) == MAX_REASONS + 1
    assert drops.counts[OTHER_REASONS] == 50
    assert drops.total == MAX_REASONS + 50
    # Only the first of the lumped ones is new: one log line, not fifty.
    assert new.count(True) == MAX_REASONS + 1
    assert drops.add("unknown htype 0") is False  # a known reason is still its own


# -- safe_feed / safe_flush ------------------------------------------------------------------


class Broken(Framer):
    """Raises what it is told to, from feed and flush."""

    typ = "broken"

    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        if self.error is not None:
            raise self.error
        return self.forward(Kind.START, message)

    def flush(self) -> list[Framed]:
        if self.error is not None:
            raise self.error
        return []


def test_safe_feed_passes_events_through() -> None:
    framer = Stream1Framer()
    events = safe_feed(framer, build_header("x.h5"))
    events += safe_feed(framer, build_end(1))
    assert [e.kind for e in events] == [Kind.START, Kind.END]
    assert framer.drops.total == 0


def test_safe_feed_turns_an_exception_into_a_logged_drop() -> None:
    framer = Broken(ZeroDivisionError("division by zero"))
    logged: list[tuple[str, str]] = []
    framer.on_new_drop = lambda reason, sample: logged.append((reason, sample))
    assert safe_feed(framer, [b"\x01\x02payload"]) == []
    assert safe_feed(framer, [b"again"]) == []
    assert framer.drops.counts == {"framer error: ZeroDivisionError": 2}
    assert len(logged) == 1
    reason, sample = logged[0]
    assert reason == "framer error: ZeroDivisionError"
    assert "division by zero" in sample and "payload" in sample


def test_safe_flush_turns_an_exception_into_a_drop() -> None:
    framer = Broken(MemoryError())
    assert safe_flush(framer) == []
    assert framer.drops.counts == {"framer error: MemoryError": 1}


def test_an_exception_whose_text_fails_is_still_counted() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    framer = Broken(Nasty())
    assert safe_feed(framer, [b"x"]) == []
    assert framer.drops.counts == {"framer error: Nasty": 1}


def test_cancellation_and_interrupts_are_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        safe_feed(Broken(KeyboardInterrupt()), [b"x"])
    with pytest.raises(SystemExit):
        safe_flush(Broken(SystemExit(1)))
