"""Seed messages for the fuzzer: real captures where we have them, builder output always.

A seed is a sequence of upstream messages in the order the upstream sent them (start first),
so that a fuzz case can replay a window of it with the scan already started and reach the
framers' data paths, not only their "before the start message" drops.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tango_dranspose.core.capture import read_dump, read_raw_capture
from tango_dranspose.streams import (
    albaem,
    contrast,
    dectris_stream2,
    eiger_legacy,
    lecroy,
    pcap,
    positioncap,
    protocols,
    sardana,
    stream1,
    xspress3,
)
from tests.conftest import captures_path

Message = list[bytes]


@dataclass(frozen=True)
class Seed:
    """One upstream sequence: where it comes from and its messages."""

    source: str
    messages: tuple[tuple[bytes, ...], ...]


@dataclass(frozen=True)
class Corpus:
    typ: str
    seeds: tuple[Seed, ...]

    @property
    def from_captures(self) -> bool:
        return any(not seed.source.startswith("builder:") for seed in self.seeds)

    @functools.cached_property
    def frames(self) -> list[bytes]:
        """Every frame of every seed, for splicing."""
        return [frame for seed in self.seeds for message in seed.messages for frame in message]


# Which capture files hold which protocol; ``dump:`` files are ingester dumps whose events
# carry the upstream frames, the others raw upstream captures.
CAPTURES: dict[str, tuple[str, ...]] = {
    "STINS": ("dump:dump_xrd.cbors", "dump:danmax-tomo/dumporca-*.cbors"),
    "EIGER_LEGACY": ("eiger-small.cbors",),
    "DECTRIS_STREAM2": (),
    "xspress": ("xspress3-dump.cbors", "xspress3-multipart.cbors", "xspress3mini-dump20.cbors"),
    "PCAP": ("pcap-zmq.cbors",),
    "PCAP_RAW": ("dump:danmax-tomo/dumppcap_rot*.cbors",),
    "albaem": ("albaem-dump.cbors",),
    "contrast": ("contrast-dump.cbors",),
    "sardana": ("dump:danmax-tomo/dumpsardana-*.cbors",),
    "lecroy": ("maui-02-continuous-3.cbor.gz", "maui-02-sequential-3.cbor.gz"),
}


def _freeze(messages: Iterable[Sequence[Any]]) -> tuple[tuple[bytes, ...], ...]:
    return tuple(tuple(bytes(frame) for frame in message) for message in messages)


def _capture_seeds(typ: str, root: Path) -> Iterator[Seed]:
    for pattern in CAPTURES[typ]:
        dump = pattern.startswith("dump:")
        for path in sorted(root.glob(pattern.removeprefix("dump:"))):
            if dump:
                messages = [
                    sd.frames for record in read_dump(path) for sd in record.streams.values()
                ]
            else:
                messages = list(read_raw_capture(path))
            yield Seed(str(path.relative_to(root)), _freeze(messages))


def _spectra(channels: int) -> np.ndarray:
    return np.random.default_rng(channels).poisson(2.0, (channels, 4096)).astype(np.uint32)


def _builder_messages(typ: str) -> list[Sequence[Any]]:
    image = stream1.diffraction_ring((16, 16), radius=5.0)
    if typ == "STINS":
        return [
            stream1.build_header("out.h5", 0, meta={"expected_data": 3}),
            stream1.build_image(image, 0, 1),
            stream1.build_image(image, 1, 2, compression="bslz4"),
            stream1.build_image(image, 2, 3, compression="lz4-h5"),
            stream1.build_end(4),
        ]
    if typ == "EIGER_LEGACY":
        config = {"x_pixels_in_detector": 16, "y_pixels_in_detector": 16}
        return [
            eiger_legacy.build_header(config, header_detail="all", appendix={"a": 1}),
            eiger_legacy.build_image(image, 0, compression="bslz4"),
            eiger_legacy.build_image(image, 1, compression="lz4"),
            eiger_legacy.build_image(image, 2, compression="none", appendix=None),
            eiger_legacy.build_end(),
        ]
    if typ == "DECTRIS_STREAM2":
        mask = np.zeros((16, 16), np.uint32)
        return [
            dectris_stream2.build_start(
                image_size=(16, 16), pixel_mask={"threshold_1": mask}, user_data={"u": [1]}
            ),
            dectris_stream2.build_image(image, 0, compression="bslz4"),
            dectris_stream2.build_image(image, 1, compression="lz4"),
            dectris_stream2.build_image(image, 2, compression="none"),
            dectris_stream2.build_end(),
        ]
    if typ == "xspress":
        return [
            xspress3.build_header("out.h5"),
            xspress3.build_image(_spectra(2), 0),
            *xspress3.build_image_old(_spectra(2), 1),
            xspress3.build_image(_spectra(2), 2, meta=xspress3.default_meta(_spectra(2), False)),
            xspress3.build_end(),
        ]
    if typ == "PCAP":
        return list(pcap.build_scan(pcap.rotation_rows(20), rows_per_message=7))
    if typ == "PCAP_RAW":
        arm = positioncap.build_arm(positioncap.rotation_rows(4))
        # As the PandA's byte stream arrives: in chunks that cut lines anywhere.
        return [[arm[i : i + 97]] for i in range(0, len(arm), 97)]
    if typ == "albaem":
        return [
            albaem.build_start(),
            albaem.build_data(0, [1e-9, 2e-9, 3e-9, 4e-9], 0.1, 100),
            albaem.build_data(1, [1e-9, 2e-9, 3e-9, 4e-9], 0.2, 200),
            albaem.build_end(4),
        ]
    if typ == "contrast":
        return [
            contrast.build_heartbeat(),
            contrast.build_started(1, "/data", "ascan sx 0 1 2", {"sx": 0.0}),
            contrast.build_running(0.1, {"sx": 0.5, "det": np.arange(6, dtype=np.int32)}),
            contrast.build_running(0.1, {"sx": 1.0, "det": {"sum": np.float64(3.0)}}),
            contrast.build_finished(1, "/data", "ascan sx 0 1 2"),
        ]
    if typ == "sardana":
        return [
            sardana.build_data_description(["mot"], ["tango://h:1/expchan/ct/1"]),
            sardana.build_record_data(0, {"mot": 0.0, "tango://h:1/expchan/ct/1": 1.0}, 0.1),
            sardana.build_custom_data("x", [1, 2]),
            sardana.build_record_end(),
        ]
    if typ == "lecroy":
        return lecroy.build_run(sequences=2, samples=64) + lecroy.build_run(
            sequences=2, ntriggers=3, samples=32
        )
    raise KeyError(f"no builder seeds for protocol {typ!r}")


@functools.cache
def corpus(typ: str, use_captures: bool = True) -> Corpus:
    """The seeds of protocol ``typ``: builder output, plus the captures when they are here."""
    seeds = [Seed(f"builder:{typ}", _freeze(_builder_messages(typ)))]
    root = captures_path()
    if use_captures and root.is_dir():
        seeds += _capture_seeds(typ, root)
    return Corpus(typ, tuple(seeds))


def protocol_names() -> list[str]:
    names = sorted(protocols())
    missing = set(names) ^ set(CAPTURES)
    if missing:
        # A new protocol needs seeds here; a removed one its entry gone.
        raise AssertionError(f"fuzz corpus and protocol registry differ: {sorted(missing)}")
    return names
