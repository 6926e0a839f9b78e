"""Synthetic scan for the demo: a powder ring that expands over the scan (e.g. heating).

Written as an ingester dump of stream ``xrd``, so the demo needs no external files.
"""

from __future__ import annotations

from pathlib import Path

from tango_dranspose.core.capture import DumpWriter
from tango_dranspose.core.events import StreamData
from tango_dranspose.streams.stream1 import build_end, build_header, build_image, diffraction_ring

SHAPE = (64, 64)


def write_demo_scan(path: Path, frames: int = 50, stream: str = "xrd") -> Path:
    with DumpWriter(path) as dump:
        dump.write(0, {stream: StreamData("STINS", build_header(filename="", msg_number=0))})
        for i in range(frames):
            radius = 10.0 + 18.0 * i / max(frames - 1, 1)
            image = diffraction_ring(SHAPE, radius=radius, width=1.5, seed=i, intensity=500.0)
            dump.write(i + 1, {stream: StreamData("STINS", build_image(image, i, i + 1))})
        dump.write(frames + 1, {stream: StreamData("STINS", build_end(frames + 1))})
    return path
