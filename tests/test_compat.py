"""The porting promise: a dranspose payload runs after replacing ``dranspose.`` in imports."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tango_dranspose.core.capture import write_raw_capture
from tango_dranspose.runtime.replay import ReplayConfig, run_replay
from tango_dranspose.streams.xspress3 import build_end, build_header, build_image, build_image_old

FACADE = {
    "event": ["EventData", "ResultData", "StreamData", "InternalWorkerMessage"],
    "parameters": [
        "StrParameter",
        "BinaryParameter",
        "IntParameter",
        "FloatParameter",
        "BoolParameter",
        "ParameterBase",
        "ParameterType",
    ],
    "protocol": ["StreamName", "EventNumber", "ParameterName", "WorkParameter", "ReducerState"],
    "data.stream1": ["Stream1Start", "Stream1Data", "Stream1End"],
    "data.positioncap": ["PositionCapValues", "PositionCapStart", "PositionCapEnd"],
    "data.xspress3": ["XspressStart", "XspressImage", "XspressEnd"],
    "data.sardana": ["SardanaDataDescription", "SardanaRecordData", "SardanaRecordEnd"],
    "data.contrast": ["ContrastStarted", "ContrastRunning", "ContrastFinished"],
    "data.lecroy": ["LecroyParsed", "LecroyPrepare", "LecroyEnd"],
    "data.pcap": ["PCAPStart", "PCAPData", "PCAPEnd"],
    "data.eiger_legacy": ["EigerLegacyHeader", "EigerLegacyImage", "EigerLegacyEnd"],
    "data.albaem": ["AlbaemStart", "AlbaemData", "AlbaemEnd"],
    "middlewares.stream1": ["parse"],
    "middlewares.xspress": ["parse"],
    "middlewares.positioncap": ["parse", "PositioncapParser"],
    "middlewares.sardana": ["parse"],
    "middlewares.contrast": ["parse"],
    "middlewares.lecroy": ["parse"],
    "middlewares.pcap": ["parse"],
    "middlewares.eiger_legacy": ["parse"],
    "middlewares.albaem": ["parse"],
}


@pytest.mark.parametrize("module", sorted(FACADE))
def test_facade_exports(module: str) -> None:
    mod = importlib.import_module(f"tango_dranspose.compat.{module}")
    missing = [n for n in FACADE[module] if not hasattr(mod, n)]
    assert not missing


# Written exactly as a dranspose payload would be; the test ports it by text replacement.
DRANSPOSE_PAYLOAD = """
import numpy as np

from dranspose.event import EventData, ResultData
from dranspose.parameters import IntParameter, StrParameter
from dranspose.middlewares.xspress import parse as parse_xspress
from dranspose.data.xspress3 import XspressImage, XspressStart


class FluoWorker:
    def __init__(self, *args, **kwargs):
        self.number = 0

    @staticmethod
    def describe_parameters():
        return [IntParameter(name="channel", default=0),
                StrParameter(name="window", default="[100, 200]")]

    def process_event(self, event: EventData, parameters=None, *args, **kwargs):
        msg = parse_xspress(event.streams["xsp3"])
        if isinstance(msg, XspressStart):
            return {"start": msg.filename}
        if isinstance(msg, XspressImage):
            lo, hi = (int(x) for x in __import__("json").loads(parameters["window"].value))
            ch = parameters["channel"].value
            return {"frame": msg.frame, "counts": int(msg.data[ch, lo:hi].sum()),
                    "dtc": float(msg.meta["dtc"][ch])}


class FluoReducer:
    def __init__(self, parameters=None, context=None, state=None, **kwargs):
        self.publish = {"fluo": {}}
        self.rows = {}
        self.started = []

    def process_result(self, result: ResultData, parameters=None):
        if "start" in result.payload:
            self.started.append(result.worker)
            return
        self.rows[result.payload["frame"]] = result.payload["counts"]

    def finish(self, parameters=None):
        keys = sorted(self.rows)
        self.publish["fluo"] = {"frame": np.array(keys),
                                "counts": np.array([self.rows[k] for k in keys])}
        self.publish["workers_started"] = len(self.started)
"""


def port(source: str) -> str:
    return "\n".join(
        line.replace("dranspose.", "tango_dranspose.compat.")
        if line.lstrip().startswith(("from dranspose.", "import dranspose."))
        else line
        for line in source.splitlines()
    )


def write_payload(root: Path) -> None:
    pkg = root / "fluo_payload"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(port(textwrap.dedent(DRANSPOSE_PAYLOAD)))


def replay_fluo(tmp_path: Path, capture: str) -> dict:
    write_payload(tmp_path)
    s = run_replay(
        ReplayConfig(
            worker="fluo_payload:FluoWorker",
            reducer="fluo_payload:FluoReducer",
            captures=[capture],
            parameters={"channel": b"1", "window": b"[0, 4096]"},
            workers=2,
            search=[tmp_path],
        )
    )
    assert s.ok, s.failures
    return s.publish


@pytest.mark.parametrize("builder", [build_image, build_image_old])
def test_ported_payload_on_synthetic_xspress3(tmp_path: Path, builder: object) -> None:
    rng = np.random.default_rng(3)
    spectra = [rng.integers(0, 50, size=(4, 4096), dtype=np.uint32) for _ in range(6)]
    messages: list[list[bytes]] = [[b'{"htype": "image", "frame": 99}'], build_header("x.h5")]
    for i, s in enumerate(spectra):
        built = builder(s, i)  # type: ignore[operator]
        # Old firmware sends three single-part messages; the new one a 3-part message.
        messages.extend(built if isinstance(built[0], list) else [built])
    messages.append(build_end())
    capture = tmp_path / "xsp3.cbors"
    write_raw_capture(capture, messages)
    publish = replay_fluo(tmp_path, f"xsp3:xspress={capture}")
    assert publish["workers_started"] == 2
    np.testing.assert_array_equal(publish["fluo"]["frame"], np.arange(6))
    np.testing.assert_array_equal(publish["fluo"]["counts"], [s[1].sum() for s in spectra])


@pytest.mark.captures
def test_ported_payload_on_the_recorded_xspress3(captures: Path, tmp_path: Path) -> None:
    # The stream name is given, the protocol detected from the header message.
    publish = replay_fluo(tmp_path, f"xsp3={captures / 'xspress3-dump.cbors'}")
    assert len(publish["fluo"]["frame"]) == 20
    assert publish["fluo"]["counts"].dtype.kind in "iu"
