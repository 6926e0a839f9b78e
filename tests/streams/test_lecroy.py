from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tango_dranspose.core.capture import read_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams import lecroy
from tango_dranspose.streams.base import Framed, Kind, ParseError
from tango_dranspose.streams.lecroy import (
    LecroyData,
    LecroyEnd,
    LecroyFramer,
    LecroyParsed,
    LecroyPrepare,
    LecroySeqEnd,
    LecroySeqStart,
    build_prepare,
    build_run,
    build_seq_end,
    build_seq_start,
    build_stop,
    build_trace,
    parse,
)

EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


def run(framer: LecroyFramer, messages: Iterable[Sequence[Any]]) -> list[Framed]:
    out: list[Framed] = []
    for message in messages:
        out += framer.feed(message)
    return out + framer.flush()


def sd(frames: Sequence[Any]) -> StreamData:
    return StreamData("lecroy", list(frames))


def trace(ch: int = 2, frame: int = 0, rows: int = 1) -> list[bytes]:
    waveforms = np.linspace(0, 1, rows * 16).reshape(rows, 16)
    return build_trace(ch, waveforms, frame, 1.7e9, [1.7e9 + i for i in range(rows)])


# -- recorded captures ----------------------------------------------------------------------


def test_continuous_capture(captures: Path) -> None:
    messages = list(read_raw_capture(captures / "maui-02-continuous-3.cbor.gz"))
    seq_starts = [m for m in messages if len(m) == 1 and json.loads(m[0])["what"] == 1]
    assert len(seq_starts) == 1  # continuous mode: one sequence start for two sequences
    framer = LecroyFramer()
    events = run(framer, messages)
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    assert [e.data.length for e in events] == [1, 8, 8, 1]
    assert events[1].data.frames[0] == events[2].data.frames[0] == seq_starts[0][0]
    assert isinstance(parse(events[0].data), LecroyPrepare)
    for seq in (parse(events[1].data), parse(events[2].data)):
        assert isinstance(seq, LecroyParsed) and isinstance(seq, LecroySeqStart)
        assert (seq.channels, seq.ntriggers, seq.seqno, seq.continuous) == ([2, 4], -1, 0, True)
        assert [m.ch for m in seq.meta] == [2, 4]
        assert [d.shape for d in seq.data] == [(1, 8002), (1, 8002)]
        assert all(d.dtype == np.float64 for d in seq.data)
        assert [len(t) for t in seq.timestamps] == [1, 1]
        assert seq.meta[0].horiz_interval == pytest.approx(1.25e-11)
    first = parse(events[1].data)
    assert isinstance(first, LecroyParsed)
    assert [m.frame for m in first.meta] == [0, 1]
    assert first.timestamps[0] == [pytest.approx(1740563664.870739)]
    end = parse(events[3].data)
    assert isinstance(end, LecroyEnd) and end.frames == 4


def test_sequential_capture(captures: Path) -> None:
    framer = LecroyFramer()
    events = run(framer, read_raw_capture(captures / "maui-02-sequential-3.cbor.gz"))
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.DATA, Kind.END]
    for seqno, event in enumerate(events[1:3]):
        seq = parse(event.data)
        assert isinstance(seq, LecroyParsed)
        assert (seq.ntriggers, seq.seqno, seq.continuous) == (20, seqno, False)
        assert [d.shape for d in seq.data] == [(20, 8002), (20, 8002)]
        assert [len(t) for t in seq.timestamps] == [20, 20]
        assert seq.timestamps[0] == sorted(seq.timestamps[0])
        # The data is a view of the received frame, not a copy.
        assert seq.data[0].base is not None and not seq.data[0].flags.writeable


# -- synthetic messages ---------------------------------------------------------------------


@pytest.mark.parametrize("ntriggers", [-1, 5])
def test_build_run_round_trip(ntriggers: int) -> None:
    messages = build_run(sequences=3, channels=(1, 3), ntriggers=ntriggers, samples=100)
    framer = LecroyFramer()
    events = run(framer, messages)
    assert framer.drops.total == 0
    assert [e.kind for e in events] == [Kind.START] + [Kind.DATA] * 3 + [Kind.END]
    rows = 1 if ntriggers == -1 else ntriggers
    for event in events[1:4]:
        seq = parse(event.data)
        assert isinstance(seq, LecroyParsed)
        assert seq.channels == [1, 3] and [m.ch for m in seq.meta] == [1, 3]
        assert [d.shape for d in seq.data] == [(rows, 100)] * 2
    seqnos = [parse(e.data).seqno for e in events[1:4]]  # type: ignore[union-attr]
    assert seqnos == ([0, 0, 0] if ntriggers == -1 else [0, 1, 2])


def test_control_messages_parse_alone() -> None:
    assert isinstance(parse(sd(build_prepare())), LecroyPrepare)
    start = parse(sd(build_seq_start(3, 10, 2, [1])))
    assert isinstance(start, LecroySeqStart) and (start.ntriggers, start.seqno) == (10, 2)
    assert isinstance(parse(sd(build_seq_end(4))), LecroySeqEnd)
    stop = parse(sd(build_stop(9, 9)))
    assert isinstance(stop, LecroyEnd) and stop.frames == 9
    assert parse(StreamData("Lecroy", build_prepare())).what == 0  # dranspose's older tag


def test_trace_model() -> None:
    meta, waveforms, stamps = lecroy.parse_trace(trace(4, 7, rows=3))
    assert isinstance(meta, LecroyData) and (meta.ch, meta.frame, meta.dtype) == (4, 7, "float64")
    assert waveforms.shape == (3, 16) and stamps == [1.7e9, 1.7e9 + 1, 1.7e9 + 2]


# -- bad input ------------------------------------------------------------------------------


def with_head(frames: list[bytes], **changes: Any) -> list[bytes]:
    head = json.loads(frames[0])
    head.update(changes)
    return [json.dumps(head).encode(), *frames[1:]]


def bad_traces() -> dict[str, tuple[list[bytes], str]]:
    good = trace()
    return {
        "malformed JSON": ([b"{x", *good[1:]], "not valid JSON"),
        "wrong dtype": (with_head(good, dtype="float99"), "not a numpy dtype"),
        "wrong shape": (with_head(good, shape=[2, 16]), "needs 256 bytes, the buffer has 128"),
        "truncated waveform": ([good[0], good[1][:100], good[2]], "the buffer has 100"),
        "missing field": (with_head(good, horiz_interval=None), "horiz_interval"),
        "evil pickle": ([*good[:2], EVIL_PICKLE], "refusing to load"),
        "broken pickle": ([*good[:2], good[2][:5]], "not a valid pickle"),
        "not numbers": (
            [*good[:2], b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00]\x94\x8c\x01a\x94a."],
            "list of numbers",
        ),
    }


@pytest.mark.parametrize("name", list(bad_traces()))
def test_bad_traces(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    frames, text = bad_traces()[name]
    sequence = [*build_seq_start(0, 1, 0, [2]), *frames, *build_seq_end(1)]
    with pytest.raises(ParseError, match=text):
        parse(sd(sequence))
    framer = LecroyFramer()
    messages = [build_prepare(), build_seq_start(0, 1, 0, [2]), frames, build_seq_end(1)]
    events = run(framer, [*messages, build_stop(1)])
    assert [e.kind for e in events] == [Kind.START, Kind.END]
    assert framer.drops.counts == {"invalid trace message": 1, "sequence end without traces": 1}
    assert text in framer.drops.samples["invalid trace message"]
    assert calls == []


def test_bad_control_messages() -> None:
    framer = LecroyFramer()
    events = run(
        framer,
        [
            build_prepare(),
            [b"{not json"],
            [b'{"htype": "msg", "what": 7, "frame": 0}'],
            [b'{"htype": "msg", "what": 1, "frame": 0}'],  # seq-start without its fields
            [b"{}", b"{}"],
            build_stop(0),
        ],
    )
    assert [e.kind for e in events] == [Kind.START, Kind.END]
    assert framer.drops.counts == {"invalid control message": 3, "message with 2 parts": 1}
    with pytest.raises(ParseError, match=r"'what' must be 0\.\.3, got 7"):
        parse(sd([b'{"htype": "msg", "what": 7, "frame": 0}']))
    with pytest.raises(ParseError, match="ntriggers"):
        parse(sd([b'{"htype": "msg", "what": 1, "frame": 0}']))
    with pytest.raises(ParseError, match="expected a LeCroy control message"):
        parse(sd(trace()[:1]))


def test_bad_sequences_in_parse() -> None:
    start, end = build_seq_start(0, 1, 0, [2]), build_seq_end(1)
    with pytest.raises(ParseError, match="got 4 frames"):
        parse(sd([*start, *trace()[:2], *end]))
    with pytest.raises(ParseError, match="must begin with a sequence start"):
        parse(sd([*build_prepare(), *trace(), *end]))
    with pytest.raises(ParseError, match="must end with a sequence end"):
        parse(sd([*start, *trace(), *build_stop(1)]))
    with pytest.raises(ParseError, match="expected stream data of type lecroy"):
        parse(StreamData("STINS", build_prepare()))


def test_sequence_bookkeeping() -> None:
    framer = LecroyFramer()
    events = run(
        framer,
        [
            build_seq_start(0, 2, 0, [2]),  # before the prepare
            build_prepare(),
            trace(rows=2),  # sequential mode: a trace outside any sequence
            build_seq_start(0, 2, 0, [2]),
            trace(rows=2),
            build_seq_start(1, 2, 1, [2]),  # the previous sequence never ended
            trace(rows=2),
            build_seq_end(2),
            build_seq_end(3),  # a second end: nothing open
            build_seq_start(3, 2, 2, [2]),
            trace(rows=2),
            build_stop(4),  # cuts the open sequence
            trace(rows=2),  # after the stop
        ],
    )
    assert [e.kind for e in events] == [Kind.START, Kind.DATA, Kind.END]
    seq = parse(events[1].data)
    assert isinstance(seq, LecroyParsed) and seq.seqno == 1
    assert framer.drops.counts == {
        "before the start message": 1,
        "trace outside a sequence": 1,
        "sequence not ended before the next sequence start": 1,
        "sequence end without traces": 1,
        "sequence not ended before the stop": 1,
        "after the end message": 1,
    }


def test_continuous_sequence_cut_by_the_upstream_end() -> None:
    framer = LecroyFramer()
    messages = [build_prepare(), build_seq_start(0, -1, 0, [2]), trace(), build_seq_end(1), trace()]
    events = run(framer, messages)  # run() flushes at the end
    assert [e.kind for e in events] == [Kind.START, Kind.DATA]
    assert framer.drops.counts == {"sequence not ended when the stream stopped": 1}
    framer.reset()
    assert [e.kind for e in framer.feed(build_prepare())] == [Kind.START]
    assert framer.feed(trace()) == []  # the previous scan's sequence start is forgotten
    assert framer.drops.counts["trace outside a sequence"] == 1


def test_detect_and_facades() -> None:
    assert LecroyFramer.detect(build_prepare())
    assert not LecroyFramer.detect(build_seq_start(0, 1, 0, [1]))
    from tango_dranspose.compat.data import lecroy as data
    from tango_dranspose.compat.middlewares import lecroy as middleware

    assert middleware.parse is parse
    assert data.LecroyParsed is LecroyParsed
    packet = data.LecroyPacket.validate_python({"htype": "msg", "what": 3, "frame": 1, "frames": 1})
    assert isinstance(packet, LecroyEnd)
    assert lecroy.PROTOCOL.typ == "lecroy"
