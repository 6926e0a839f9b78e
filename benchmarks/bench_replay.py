"""Local replay throughput: N events of 1 KiB STINS frames through a trivial payload.

    python -m benchmarks.bench_replay [--events 100000] [--workers 1 2] [--repeat 3]

Prints a table of events/s. The capture is generated first (not timed) as an ingester dump,
so reading and decoding the file is part of what is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tango_dranspose.core.capture import DumpWriter
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.triggermap import TriggerMap, round_robin_map
from tango_dranspose.runtime.replay import ReplayConfig, run_replay

HERE = Path(__file__).resolve().parent


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
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
