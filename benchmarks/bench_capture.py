"""Reading capture files: gzip-compressed against the same capture uncompressed, in one run.

    python -m benchmarks.bench_capture [--events 20000] [--repeat 5]

For every recorded LeCroy capture (``maui-02-*.cbor.gz``, in ``$TANGO_DRANSPOSE_CAPTURES`` or
``../shared/captures``) and for a generated ingester dump of ``--events`` records of 1 KiB
frames, the compressed file and an uncompressed copy (written to a temporary directory first,
not timed) are read completely with the capture reader. Prints a table: records, uncompressed
size, median read time and records/s of each, and the ratio gz/plain. A reader that seeks a
gzip stream backwards shows as a ratio that grows with the number of records.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tango_dranspose.core.capture import capture_kind, read_dump, read_raw_capture

from .bench_replay import make_dump

REPO = Path(__file__).resolve().parent.parent


def captures_dir() -> Path:
    return Path(os.environ.get("TANGO_DRANSPOSE_CAPTURES", REPO.parent / "shared" / "captures"))


def _reader(path: Path) -> Callable[[Path], Iterator[Any]]:
    return read_dump if capture_kind(path) == "dump" else read_raw_capture


def time_read(path: Path, repeat: int) -> tuple[int, float]:
    """Records in the file and the median time to read them all."""
    reader = _reader(path)
    times = []
    records = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        records = sum(1 for _ in reader(path))
        times.append(time.perf_counter() - t0)
    return records, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=20_000, help="records of the generated dump")
    ap.add_argument("--repeat", type=int, default=5, help="reads of each file (median shown)")
    args = ap.parse_args(argv)
    recorded = sorted(captures_dir().glob("maui-02-*.cbor.gz"))
    if not recorded:
        print(f"no maui-02-*.cbor.gz in {captures_dir()}: only the generated dump", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs: list[tuple[str, Path, Path]] = []
        for packed in recorded:
            plain = Path(tmp) / packed.name.removesuffix(".gz")
            with gzip.open(packed, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            pairs.append((packed.name.removesuffix(".cbor.gz"), packed, plain))
        generated = Path(tmp) / "generated.cbors"
        make_dump(generated, args.events)
        generated_gz = Path(tmp) / "generated.cbors.gz"
        with open(generated, "rb") as src, gzip.open(generated_gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        pairs.append(("generated dump, 1 KiB frames", generated_gz, generated))
        for label, packed, plain in pairs:
            n_gz, t_gz = time_read(packed, args.repeat)
            n_plain, t_plain = time_read(plain, args.repeat)
            assert n_gz == n_plain, (label, n_gz, n_plain)
            rows.append((label, n_gz, plain.stat().st_size / 1e6, t_gz, t_plain))
    print(f"\ncapture reading, median of {args.repeat} complete reads")
    print(
        f"{'capture':<30} {'records':>8} {'MB':>7} {'gz s':>8} {'gz rec/s':>10} "
        f"{'plain s':>8} {'plain rec/s':>11} {'gz/plain':>8}"
    )
    for label, n, mb, t_gz, t_plain in rows:
        print(
            f"{label:<30} {n:>8,} {mb:>7.1f} {t_gz:>8.3f} {n / t_gz:>10,.0f} "
            f"{t_plain:>8.3f} {n / t_plain:>11,.0f} {t_gz / t_plain:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
