"""Throughput of the HDF5 replay source: events/s read from detector and scan files.

    python -m benchmarks.bench_hdf5 [--frames 1000] [--shape 256 256] [--repeat 3]

Writes (not timed) a bitshuffle+LZ4 file in the Eiger layout (one frame per chunk), the same
frames uncompressed, the same compressed two frames per chunk (which HDF5 must decompress) and
a scan column, then reads each as the replay does and prints a table of events/s and the MB/s
of what the events carry (compressed chunks count as stored). ``replay`` rows add the trivial
payload (which does not decompress) and the result codec.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bitshuffle.h5 as bshuf_h5
import h5py
import numpy as np

from tango_dranspose.runtime.replay import ReplayConfig, run_replay
from tango_dranspose.sources.hdf5 import Hdf5Source, Hdf5Spec

HERE = Path(__file__).resolve().parent


def write_files(root: Path, frames: int, shape: tuple[int, int]) -> dict[str, str]:
    """The inputs to measure, as ``-f`` specs."""
    rng = np.random.default_rng(0)
    # A few distinct noisy frames, repeated: generating every frame would dominate the setup.
    distinct = rng.poisson(20, (16, *shape)).astype(np.uint16)
    data = distinct[np.arange(frames) % len(distinct)]
    bslz4 = {"compression": bshuf_h5.H5FILTER, "compression_opts": (0, bshuf_h5.H5_COMPRESS_LZ4)}
    with h5py.File(root / "data_000001.h5", "w") as f:
        f.create_dataset("/entry/data/data", data=data, chunks=(1, *shape), **bslz4)
    with h5py.File(root / "master.h5", "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink("data_000001.h5", "/entry/data/data")
        f.create_dataset("/entry/raw", data=data, chunks=(1, *shape))
        f.create_dataset("/entry/pairs", data=data, chunks=(2, *shape), **bslz4)
        f["/entry/x"] = np.linspace(0.0, 1.0, frames * 50)
    master = root / "master.h5"
    return {
        "bslz4, 1 frame/chunk (direct)": f"cam:hdf5={master}?dataset=/entry/data/data",
        "uncompressed": f"cam:hdf5={master}?dataset=/entry/raw",
        "bslz4, 2 frames/chunk (decoded)": f"cam:hdf5={master}?dataset=/entry/pairs",
        "scan column (PCAP rows)": f"x:hdf5={master}?dataset=/entry/x",
    }


def read_source(spec: str) -> tuple[int, int, float]:
    """Events and bytes carried, and the seconds to read them all."""
    source = Hdf5Source(Hdf5Spec.parse(spec))
    start = time.perf_counter()
    events = carried = 0
    for _, streams in source.events():
        events += 1
        carried += sum(sd.nbytes() for sd in streams.values())
    return events, carried, time.perf_counter() - start


def replay_rate(spec: str) -> tuple[int, float]:
    s = run_replay(
        ReplayConfig(
            worker="payloads:CountWorker",
            reducer="payloads:CountReducer",
            captures=[spec],
            search=[HERE],
        )
    )
    assert s.ok, s.failures
    return s.events, s.elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--shape", type=int, nargs=2, default=[256, 256], metavar=("Y", "X"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    shape = (args.shape[0], args.shape[1])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        specs = write_files(Path(tmp), args.frames, shape)
        print(f"wrote the files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for name, spec in specs.items():
            rates, mbs = [], []
            for _ in range(args.repeat):
                events, carried, took = read_source(spec)
                rates.append(events / took)
                mbs.append(carried / took / 1e6)
            rows.append(("source", name, events, rates, statistics.median(mbs)))
        for name in ("bslz4, 1 frame/chunk (direct)", "uncompressed"):
            rates = []
            for _ in range(args.repeat):
                events, took = replay_rate(specs[name])
                rates.append(events / took)
            rows.append(("replay", name, events, rates, float("nan")))
    print(
        f"\nHDF5 replay source, {args.frames} frames of {shape[0]}x{shape[1]} uint16 "
        f"({args.repeat} runs)"
    )
    print(
        f"{'what':<7} {'input':<32} {'events':>7} {'median ev/s':>12} {'best ev/s':>10} "
        f"{'MB/s carried':>13}"
    )
    for what, name, events, rates, mb in rows:
        shown = "" if np.isnan(mb) else f"{mb:,.0f}"
        print(
            f"{what:<7} {name:<32} {events:>7} {statistics.median(rates):>12,.0f} "
            f"{max(rates):>10,.0f} {shown:>13}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
