"""Replay and the live runtime on the same capture give the same result file.

The live side is the in-process pipeline (scheduler, ingesters, workers and reducer on one
loop over real ZeroMQ sockets), fed by a PUSH socket per stream with the capture's messages as
a detector sends them, and armed with the map the replay follows: the replay's ``--map``, or,
without one, ``default_trigger_map`` (what the replay does without a map, as a map). The
publish trees are compared as ``read_tree`` reads them back; the ``tango_dranspose/``
provenance group, which only the live reducer writes, is left out.

The live reducer reduces results as they arrive, which with several workers is not event
order (dranspose's does the same). The reducer here therefore sorts what it kept before
publishing, so that the comparison is about what was reduced, not in which order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tango_dranspose.core.h5tree import read_tree
from tango_dranspose.core.triggermap import TriggerMap
from tango_dranspose.runtime.replay import (
    ReplayConfig,
    ReplaySummary,
    default_trigger_map,
    open_inputs,
    run_replay,
)
from tango_dranspose.runtime.replaysvc import run_replay_services
from tango_dranspose.sources.capture import open_captures
from tango_dranspose.sources.generators import merged_events
from tango_dranspose.sources.messages import capture_source
from tests.runtime.pipeline import pipeline, run
from tests.runtime.test_replay import assert_same_tree

PAYLOADS = """
import zlib

import numpy as np


def digest(event):
    # Event number, streams, frames, bytes and a checksum of everything received: any frame
    # lost, duplicated, cut differently or sent to the wrong event changes the row.
    crc, frames, size = 0, 0, 0
    for name in sorted(event.streams):
        crc = zlib.crc32(name.encode(), crc)
        for frame in event.streams[name].frames:
            raw = bytes(frame.buffer if hasattr(frame, "buffer") else frame)
            crc = zlib.crc32(raw, crc)
            frames += 1
            size += len(raw)
    return [event.event_number, len(event.streams), frames, size, crc]


class RowWorker:
    # A new row per event; broadcast events give one row per worker.
    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event, parameters=None, tick=False):
        return digest(event)


class StateWorker:
    # Returns its running state: one array, overwritten in place by every event. The codec
    # sends arrays zero-copy, and a live worker holds results while more events wait: what
    # is reduced must still be the array as it was when returned.
    def __init__(self, *args, **kwargs):
        self.state = np.zeros(5, dtype=np.int64)

    def process_event(self, event, parameters=None, tick=False):
        self.state[:] = digest(event)
        return {"state": self.state}


class PileWorker:
    # Returns its running state: a list that grows with every event it sees.
    def __init__(self, *args, **kwargs):
        self.pile = []

    def process_event(self, event, parameters=None, tick=False):
        self.pile.append(event.event_number)
        return {"pile": self.pile}


class Reducer:
    # Keeps every result as received (no copy, so a result the worker changed after returning
    # it shows), and publishes them sorted at the end.
    def __init__(self, *args, **kwargs):
        self.kept = []
        self.publish = {}

    def process_result(self, result, parameters=None):
        self.kept.append(result.payload)

    def finish(self, parameters=None):
        rows, last, sizes = [], [], []
        for payload in self.kept:
            if isinstance(payload, dict) and "pile" in payload:
                last.append(payload["pile"][-1])
                sizes.append(len(payload["pile"]))
            else:
                rows.append(list(payload["state"] if isinstance(payload, dict) else payload))
        if rows:
            self.publish["rows"] = np.array(sorted(rows), dtype=np.int64)
        if last:
            # The event each pile ended with is the event it was returned for, whichever worker
            # had it; how long the pile was depends on which events that worker had before.
            self.publish["pile_last"] = np.array(sorted(last), dtype=np.int64)
            self.publish["pile_sizes"] = np.array(sorted(sizes), dtype=np.int64)
        self.publish["results"] = len(self.kept)
"""

PACKAGE = "replay_vs_live_payloads"

# Every shared capture, one set each; the DanMAX scan is three dumps replayed together.
SETS = [
    "albaem-dump.cbors",
    "contrast-dump.cbors",
    "dump_xrd.cbors",
    "eiger-small.cbors",
    "maui-02-continuous-3.cbor.gz",
    "maui-02-sequential-3.cbor.gz",
    "pcap-zmq.cbors",
    "xspress3-dump.cbors",
    "xspress3-multipart.cbors",
    "xspress3mini-dump20.cbors",
    "danmax-tomo",
]


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One directory for the module: a process loads a payload package of one name once.
    root = tmp_path_factory.mktemp("replay-vs-live")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text(PAYLOADS)
    return root


def files_of(captures: Path, name: str) -> list[str]:
    path = captures / name
    return sorted(str(p) for p in path.iterdir()) if path.is_dir() else [str(path)]


def feeds(files: list[str]) -> dict[str, tuple[str, list[list[bytes]]]]:
    """Per stream, its protocol and the messages its detector sent: a raw capture's records,
    or a dump's frames of that stream, one message per event (what the ingester recorded)."""
    out = {}
    for source in open_captures(files):
        for stream in source.streams:
            if source.kind == "raw":
                assert source.framer is not None
                messages = capture_source(source.spec.path)
                typ = source.framer.typ
            else:
                messages = capture_source(source.spec.path, stream)
                assert messages.typ is not None
                typ = messages.typ
            out[stream] = (typ, list(messages.messages()))
    return out


def published(path: Path) -> dict[str, Any]:
    with h5py.File(path) as f:
        tree = read_tree(f)
    tree.pop("tango_dranspose", None)  # provenance: only the live reducer writes it
    return tree


def live(
    files: list[str],
    worker: str,
    workers: int,
    tmap: TriggerMap,
    payloads: Path,
    out: Path,
    *,
    reducer: str = f"{PACKAGE}:Reducer",
    parameters: dict[str, bytes] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The live runtime's publish tree and scan summary for ``files`` under ``tmap``."""
    fed = feeds(files)

    async def go() -> dict[str, Any]:
        async with pipeline(
            [(stream, typ) for stream, (typ, _) in fed.items()],
            worker if ":" in worker else f"{PACKAGE}:{worker}",
            reducer,
            workers=[("generic",)] * workers,
            search=[str(payloads)],
            output_dir=str(out),
        ) as p:
            await p.scheduler.arm(tmap, scan_id="live", parameters=parameters)
            # Every stream at once, as detectors do: the ingester may need one stream's next
            # frame while another's messages still wait to be sent.
            senders = [asyncio.ensure_future(p.send(s, msgs)) for s, (_, msgs) in fed.items()]
            try:
                scan = await p.scheduler.wait(60)
            except asyncio.TimeoutError:
                pytest.fail(f"the live scan did not end: {p.scheduler.summary()}")
            finally:
                for task in senders:
                    task.cancel()  # frames the map never asked for stay unsent
            assert scan is not None and scan.state == "finished", p.scheduler.summary()
            return p.scheduler.summary()

    status = run(go(), timeout=90)
    return published(out / "live_processed.h5"), status


def replayed(
    files: list[str],
    worker: str,
    workers: int,
    tmap: TriggerMap | None,
    payloads: Path,
    out: Path,
    *,
    reducer: str = f"{PACKAGE}:Reducer",
    parameters: dict[str, bytes] | None = None,
) -> tuple[dict[str, Any], ReplaySummary]:
    s = run_replay(
        ReplayConfig(
            worker=worker if ":" in worker else f"{PACKAGE}:{worker}",
            reducer=reducer,
            captures=files,
            parameters=parameters or {},
            workers=workers,
            trigger_map=tmap,
            output=out / "replay.h5",
            search=[payloads],
        )
    )
    assert s.ok, s.failures
    return published(out / "replay.h5"), s


def assert_same_ledger(s: ReplaySummary, status: dict[str, Any]) -> None:
    for stream, led in s.streams.items():
        got = status["ledger"][stream]
        assert (got["delivered"], got["discarded"]) == (led.delivered, led.discarded), stream


def assert_same_counts(a: ReplaySummary, b: ReplaySummary) -> None:
    assert (a.events, a.results) == (b.events, b.results)
    for stream, led in a.streams.items():
        other = b.streams[stream]
        assert (led.delivered, led.discarded, led.missing) == (
            other.delivered,
            other.discarded,
            other.missing,
        ), stream


def pairs_map(files: list[str]) -> TriggerMap:
    """Frames in pairs on one worker, every fourth discarded, each stream's first and last
    frame (start and end messages) to every worker: a typical live map."""
    counts: dict[str, int] = {}
    for _, streams in merged_events(open_inputs(ReplayConfig("", "", files))):
        for stream in streams:
            counts[stream] = counts.get(stream, 0) + 1
    data = min(counts.values()) - 2
    cells = [[] if i % 4 == 3 else [{"constraint": i // 2}] for i in range(data)]
    return TriggerMap.from_json({s: cells for s in counts})


@pytest.mark.captures
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("worker", ["RowWorker", "StateWorker", "PileWorker"])
@pytest.mark.parametrize("name", SETS)
def test_without_a_map_replay_equals_live_under_the_default_map(
    captures: Path, payloads: Path, tmp_path: Path, name: str, worker: str, workers: int
) -> None:
    files = files_of(captures, name)
    tree, s = replayed(files, worker, workers, None, payloads, tmp_path)
    tmap = default_trigger_map(open_inputs(ReplayConfig("", "", files)))
    live_tree, status = live(files, worker, workers, tmap, payloads, tmp_path)
    if workers > 1:
        # Which events a worker had before depends on the assignment, which differs.
        tree.pop("pile_sizes", None)
        live_tree.pop("pile_sizes", None)
    assert_same_tree(tree, live_tree, name)
    # The first event reached every worker, and only the first: one result per worker there.
    assert tree["results"] == s.events + workers - 1
    assert_same_ledger(s, status)


@pytest.mark.captures
@pytest.mark.parametrize("worker", ["RowWorker", "StateWorker", "PileWorker"])
@pytest.mark.parametrize("name", SETS)
def test_with_a_map_replay_equals_live(
    captures: Path, payloads: Path, tmp_path: Path, name: str, worker: str
) -> None:
    files = files_of(captures, name)
    tmap = pairs_map(files)
    tree, s = replayed(files, worker, 3, tmap, payloads, tmp_path)
    live_tree, status = live(files, worker, 3, tmap, payloads, tmp_path)
    tree.pop("pile_sizes", None)
    live_tree.pop("pile_sizes", None)
    assert_same_tree(tree, live_tree, name)
    # Start and end went to all three workers, every fourth data frame to none.
    data = tmap.data_events
    assert tree["results"] == 2 * 3 + data - data // 4
    assert_same_ledger(s, status)


@pytest.mark.captures
def test_parameters_reach_the_payloads_alike(
    captures: Path, payloads: Path, tmp_path: Path
) -> None:
    files = files_of(captures, "dump_xrd.cbors")
    roi = ("tango_dranspose.examples.roi:RoiWorker", "tango_dranspose.examples.roi:RoiReducer")
    params = {"roi": b"[2, 8, 3, 7]", "threshold": b"20"}
    tree, s = replayed(
        files, roi[0], 2, None, payloads, tmp_path, reducer=roi[1], parameters=params
    )
    tmap = default_trigger_map(open_inputs(ReplayConfig("", "", files)))
    live_tree, status = live(
        files, roi[0], 2, tmap, payloads, tmp_path, reducer=roi[1], parameters=params
    )
    assert_same_tree(tree, live_tree)
    with h5py.File(tmp_path / "live_processed.h5") as f:
        assert f["roi"].attrs["roi"] == "[2, 8, 3, 7]"
    whole, _ = replayed(files, roi[0], 2, None, payloads, tmp_path, reducer=roi[1])
    assert not np.array_equal(whole["roi"]["intensity"], tree["roi"]["intensity"])
    assert_same_ledger(s, status)


# -- the services-based replay (decision 0015) --------------------------------------------------


@pytest.mark.captures
@pytest.mark.parametrize("name", ["dump_xrd.cbors", "xspress3-dump.cbors", "danmax-tomo"])
def test_the_services_replay_gives_the_replays_result(
    captures: Path, payloads: Path, tmp_path: Path, name: str
) -> None:
    files = files_of(captures, name)
    tree, s = replayed(files, "RowWorker", 2, None, payloads, tmp_path)
    out = tmp_path / "services.h5"
    out.write_bytes(b"an earlier result")  # -o replaces a file, as the replay's does
    v = run_replay_services(
        ReplayConfig(
            worker=f"{PACKAGE}:RowWorker",
            reducer=f"{PACKAGE}:Reducer",
            captures=files,
            workers=2,
            output=out,
            search=[payloads],
        )
    )
    assert v.ok and v.output == out
    assert_same_counts(s, v)
    assert_same_tree(tree, published(out), name)


@pytest.mark.captures
def test_frames_a_capture_does_not_have_are_missing_alike(
    captures: Path, payloads: Path, tmp_path: Path
) -> None:
    # A map longer than the DanMAX scan (13 frames per stream): orca and pcap_rot run out
    # two events before its end, sardana (no frame every third event) has frames left. Only
    # an upstream that ends can say so: the services replay reads the files as file://.
    n = 13
    tmap = TriggerMap.from_json(
        {
            "orca": [[{"constraint": i // 2}] for i in range(n)],
            "pcap_rot": [[] if i % 2 == 0 else [{"constraint": i // 2}] for i in range(n)],
            "sardana": [None if i % 3 == 0 else [{"constraint": i // 2}] for i in range(n)],
        }
    )
    cfg = ReplayConfig(
        worker=f"{PACKAGE}:RowWorker",
        reducer=f"{PACKAGE}:Reducer",
        captures=files_of(captures, "danmax-tomo"),
        workers=2,
        trigger_map=tmap,
        output=tmp_path / "replay.h5",
        search=[payloads],
    )
    s = run_replay(cfg)
    cfg.output = tmp_path / "services.h5"
    v = run_replay_services(cfg)
    assert s.ok and v.ok, (s.failures, v.failures)
    assert (s.streams["orca"].missing, s.streams["pcap_rot"].missing) == (2, 2)
    assert s.streams["sardana"].unused == 3
    assert_same_counts(s, v)
    assert_same_tree(published(tmp_path / "replay.h5"), published(tmp_path / "services.h5"))


def test_the_services_replay_refuses_what_has_no_upstream(tmp_path: Path) -> None:
    from tango_dranspose.core.capture import CaptureError

    base = ReplayConfig(worker="w:W", reducer="r:R", captures=[str(tmp_path / "x.cbors")])
    for cfg, message in [
        (ReplayConfig(**{**base.__dict__, "loop": 2}), "read each capture once"),
        (ReplayConfig(**{**base.__dict__, "source": "m:Source"}), "capture files only"),
        (ReplayConfig(**{**base.__dict__, "captures": ["cam=scan.h5"]}), "files only"),
    ]:
        with pytest.raises(CaptureError, match=message):
            run_replay_services(cfg)
