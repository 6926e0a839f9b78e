from __future__ import annotations

import tracemalloc

import pytest

from tango_dranspose.core.triggermap import (
    TriggerMap,
    TriggerMapError,
    VirtualWorker,
    round_robin_map,
)


def vw(c: int | None, *tags: str) -> dict:
    return {"constraint": c, "tags": list(tags) or ["generic"]}


def test_legacy_single_part_gets_wrap() -> None:
    m = TriggerMap.from_json({"a": [[vw(1)], [vw(2)]], "b": [None, []]})
    assert len(m) == 4
    assert m.data_events == 2
    assert m.streams == ("a", "b")
    first, last = m.event(0), m.event(3)
    assert first.part == last.part == "<wrap>"
    assert all(cell is not None and cell[0].constraint is None for _, cell in first.items())
    assert dict(m.event(2).items())["b"] == ()
    assert dict(m.event(1).items())["b"] is None


def test_wrap_off_and_sequence_with_repeats() -> None:
    m = TriggerMap.from_json(
        {
            "parts": {"x": {"s": [[vw(0)], [vw(1)]]}, "y": {"s": [[vw(5, "debug")]]}},
            "sequence": ["x", "y", "x"],
        },
        wrap=False,
    )
    assert len(m) == 5
    assert [e.part for e in m.iter_events()] == ["x", "x", "y", "x", "x"]
    assert [e.occurrence for e in m.iter_events()] == [0, 0, 1, 2, 2]
    assert m.event(4).cells[0][0].constraint == 1
    assert m.tags == {"generic", "debug"}


def test_defaults_of_virtual_worker() -> None:
    v = VirtualWorker.model_validate({})
    assert v.tags == {"generic"}
    assert v.constraint is None


def test_iter_events_matches_event_lookup() -> None:
    m = TriggerMap.from_json(
        {
            "parts": {"p": {"s": [[vw(i)] for i in range(7)]}, "q": {"s": [None, []]}},
            "sequence": ["p", "q", "p", "q"],
        }
    )
    assert [(e.event_number, e.part, e.cells) for e in m.iter_events()] == [
        (i, m.event(i).part, m.event(i).cells) for i in range(len(m))
    ]
    assert [e.event_number for e in m.iter_events(start=9)] == list(range(9, len(m)))


def test_large_repeated_part_stays_small() -> None:
    part = {
        "cam": [[vw(i // 10)] for i in range(1000)],
        "pcap": [[vw(i // 10)] for i in range(1000)],
    }
    tracemalloc.start()
    m = TriggerMap.from_json({"parts": {"p": part}, "sequence": ["p"] * 980})
    tail = [e.event_number for e in m.iter_events(start=len(m) - 1500)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(m) == 980 * 1000 + 2
    assert tail == list(range(len(m) - 1500, len(m)))
    # 980,000 events as objects would need hundreds of MB; the compiled map needs rows of one part.
    assert peak < 8 * 1024 * 1024
    assert m.event(980 * 1000).cells[0][0].constraint == 99
    assert m.min_workers() == 1
    assert m.frames_per_stream() == {"cam": 980_002, "pcap": 980_002}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"a": [[vw(1)]], "b": [[], []]}, ["part 'main'", "stream 'b'", "same length"]),
        ({"a": [[vw(1)], 5]}, ["part 'main'", "stream 'a'", "index 1"]),
        ({"a": [[{"constraint": "x"}]]}, ["stream 'a'", "index 0", "constraint"]),
        ({"a": [[{"tags": []}]]}, ["stream 'a'", "index 0", "at least one tag"]),
        ({"parts": {"p": {"a": [[]]}}, "sequence": ["p", "q"]}, ["sequence index 1", "'q'"]),
        ({"a": "nope"}, ["stream 'a'", "list of cells"]),
        ([1, 2], ["JSON object"]),
    ],
)
def test_invalid_maps_name_the_place(bad: object, words: list[str]) -> None:
    with pytest.raises(TriggerMapError) as err:
        TriggerMap.from_json(bad)
    for w in words:
        assert w in str(err.value)


def test_invalid_json_text() -> None:
    with pytest.raises(TriggerMapError, match="not valid JSON"):
        TriggerMap.from_json("{nope")


def test_round_trip_json() -> None:
    src = {"parts": {"p": {"a": [[vw(1), vw(None, "debug")], None, []]}}, "sequence": ["p", "p"]}
    m = TriggerMap.from_json(src)
    again = TriggerMap.from_json(m.to_json())
    assert [e.cells for e in again.iter_events()] == [e.cells for e in m.iter_events()]


def test_min_workers_counts_distinct_constraints() -> None:
    m = TriggerMap.from_json({"a": [[vw(1), vw(2)], [vw(3)]], "b": [[vw(3)], [vw(3)]]})
    assert m.min_workers() == 3


def test_round_robin_map_is_lazy_and_cycles() -> None:
    m = round_robin_map(["s"], events=10, workers=3)
    assert len(m) == 12
    assert [e.cells[0][0].constraint for e in m.iter_events()][1:-1] == [0, 1, 2] * 3 + [0]
    assert len(m.parts["cycle"]) == 3
