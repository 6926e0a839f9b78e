"""Local replay throughput: N events of 1 KiB STINS frames through a trivial payload.

    python -m benchmarks.bench_replay [--events 100000] [--workers 1 2] [--repeat 3]
    python -m benchmarks.bench_replay --services [--events 20000] [--workers 1 2]

Prints a table of events/s. The capture is generated first (not timed) as an ingester dump,
so reading and decoding the file is part of what is measured.

``--services`` compares the replay with the same inputs run through the live services in one
process (``runtime.replaysvc``, decision 0015): the synthetic dump and every shared capture
(``$TANGO_DRANSPOSE_CAPTURES``, default ``../shared/captures``). Rates count from arming to the
scan's end, as the replay's count from its first event; "wall" adds starting and stopping the
services, which dominates a capture of a few events.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tango_dranspose.core.capture import DumpWriter
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.triggermap import TriggerMap, round_robin_map
from tango_dranspose.runtime.replay import ReplayConfig, ReplaySummary, run_replay
from tango_dranspose.runtime.replaysvc import run_replay_services

HERE = Path(__file__).resolve().parent
CAPTURES = Path(
    os.environ.get("TANGO_DRANSPOSE_CAPTURES", HERE.parent.parent / "shared" / "captures")
)


def make_dump(path: Path, events: int, frame_bytes: int = 1024) -> None:
    payload = bytes(range(256)) * (frame_bytes // 256)
    side = frame_bytes // 2
    with DumpWriter(path) as w:
        w.write(
            0,
            {"cam": StreamData("STINS", [b'{"htype": "header", "filename": "", "msg_number": 0}'])},
        )
        for i in range(1, events - 1):
            head = (
                f'{{"htype": "image", "frame": {i - 1}, "shape": [1, {side}], "type": "uint16", '
                f'"compression": "none", "msg_number": {i}}}'
            ).encode()
            w.write(i, {"cam": StreamData("STINS", [head, payload])})
        w.write(
            events - 1, {"cam": StreamData("STINS", [b'{"htype": "series_end", "msg_number": 1}'])}
        )


def _map(mode: str, data_events: int, workers: int) -> TriggerMap | None:
    if mode == "no map":
        return None
    if mode.startswith("round-robin"):
        return round_robin_map(["cam"], data_events, workers)
    part = {"cam": [[{"constraint": i // 2}] for i in range(1000)]}
    full, rest = divmod(data_events, 1000)
    parts = {"p": part, "tail": {"cam": part["cam"][:rest]}}
    return TriggerMap.from_json({"parts": parts, "sequence": ["p"] * full + ["tail"] * bool(rest)})


def _inputs(dump: Path) -> list[tuple[str, list[str]]]:
    """The synthetic dump, then every shared capture (the DanMAX scan's three dumps together)."""
    found = [(f"synthetic {dump.name}", [str(dump)])]
    if not CAPTURES.is_dir():
        print(f"no shared captures at {CAPTURES}: synthetic dump only", file=sys.stderr)
        return found
    for path in sorted(CAPTURES.iterdir()):
        if path.is_dir():
            found.append((f"{path.name}/*", sorted(str(p) for p in path.iterdir())))
        elif ".cbor" in path.name:
            found.append((path.name, [str(path)]))
    return found


def _timed(fn: Callable[[ReplayConfig], ReplaySummary], cfg: ReplayConfig) -> tuple[float, float]:
    """(events/s as the summary counts it, events/s over the whole call)."""
    t0 = time.perf_counter()
    s = fn(cfg)
    wall = time.perf_counter() - t0
    assert s.ok, s.failures
    return s.rate, s.events / wall


def compare(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / f"stins-{args.events}x1KiB.cbors"
        make_dump(dump, args.events)
        for name, files in _inputs(dump):
            for workers in args.workers:
                cfg = ReplayConfig(
                    worker="payloads:CountWorker",
                    reducer="payloads:CountReducer",
                    captures=files,
                    workers=workers,
                    search=[HERE],
                )
                replay = [_timed(run_replay, cfg) for _ in range(args.repeat)]
                services = [_timed(run_replay_services, cfg) for _ in range(args.repeat)]
                r = statistics.median(x for x, _ in replay)
                v = statistics.median(x for x, _ in services)
                vw = statistics.median(w for _, w in services)
                rows.append((name, workers, run_replay(cfg).events, r, v, vw))
                print(f"{name} x{workers}: {r:,.0f} / {v:,.0f} events/s", file=sys.stderr)
    print("\nreplay (in-process loop) vs the same inputs through the live services in one process")
    print(f"trivial payload (payloads:CountWorker), median of {args.repeat}")
    head = f"{'input':<34} {'workers':>7} {'events':>7} {'replay ev/s':>12}"
    print(f"{head} {'services ev/s':>14} {'(wall)':>9} {'ratio':>6}")
    for name, workers, events, r, v, vw in rows:
        print(
            f"{name[:34]:<34} {workers:>7} {events:>7} {r:>12,.0f} {v:>14,.0f} {vw:>9,.0f} "
            f"{r / v if v else float('inf'):>6.1f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=None, help="default 100000; 20000 --services")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--services", action="store_true", help="compare with the live services (decision 0015)"
    )
    args = ap.parse_args(argv)
    if args.services:
        args.events = args.events or 20_000
        return compare(args)
    args.events = args.events or 100_000
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "bench.cbors"
        t0 = time.perf_counter()
        make_dump(dump, args.events)
        print(
            f"generated {args.events} events ({dump.stat().st_size / 1e6:.1f} MB) "
            f"in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        rows = []
        for mode in ("no map", "round-robin map", "pairs map (i // 2)"):
            for workers in args.workers:
                tmap = _map(mode, args.events - 2, workers)
                rates = []
                for _ in range(args.repeat):
                    cfg = ReplayConfig(
                        worker="payloads:CountWorker",
                        reducer="payloads:CountReducer",
                        captures=[str(dump)],
                        workers=workers,
                        search=[HERE],
                        trigger_map=tmap,
                    )
                    s = run_replay(cfg)
                    assert s.ok and s.events == args.events, s
                    rates.append(s.rate)
                rows.append((mode, workers, statistics.median(rates), max(rates)))
    print(f"\nlocal replay, {args.events} events of 1 KiB STINS frames, trivial payload")
    print(
        f"{'mode':<20} {'workers':>7} {'median events/s':>16} {'best events/s':>14} {'target':>8}"
    )
    for mode, workers, med, best in rows:
        print(f"{mode:<20} {workers:>7} {med:>16,.0f} {best:>14,.0f} {25_000:>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
