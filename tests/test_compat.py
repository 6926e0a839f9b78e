"""The porting promise: a dranspose payload runs after replacing ``dranspose.`` in imports."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tango_dranspose.core.capture import DumpWriter, write_raw_capture
from tango_dranspose.core.events import StreamData
from tango_dranspose.core.payload import DRANSPOSE_VERSION
from tango_dranspose.runtime.replay import ReplayConfig, run_replay
from tango_dranspose.streams import stream1
from tango_dranspose.streams.xspress3 import build_end, build_header, build_image, build_image_old
from tests.core.payload_layouts import fresh_imports, git_repo, port, write_repo


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    # Every test's payload package has the same name (fluo_payload, src): undo each load.
    with fresh_imports():
        yield


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


def write_payload(root: Path) -> None:
    write_repo(root, {"fluo_payload/__init__.py": port(DRANSPOSE_PAYLOAD)})


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


# A dranspose 0.1 payload repository as beamlines keep it: src/ without __init__.py, a mask in
# data/ opened relative to the repository, timer() without parameters (0.1), the state's
# version written into the results.
DRANSPOSE_01_WORKER = """
import numpy as np

from dranspose.event import EventData
from dranspose.parameters import IntParameter, StrParameter
from dranspose.middlewares.stream1 import parse as parse_stins
from dranspose.data.stream1 import Stream1Data


class XrdWorker:
    def __init__(self, parameters=None, context=None, state=None, **kwargs):
        self.mask = np.load("data/mask.npy")

    @staticmethod
    def describe_parameters():
        return [IntParameter(name="threshold", default=0),
                StrParameter(name="label", default="ring")]

    def process_event(self, event: EventData, parameters=None, tick=False):
        msg = parse_stins(event.streams["xrd"])
        if isinstance(msg, Stream1Data):
            image = msg.data * self.mask
            return {"frame": msg.frame,
                    "sum": int(image[image > parameters["threshold"].value].sum())}
        return None
"""

DRANSPOSE_01_REDUCER = """
import numpy as np

from dranspose.event import ResultData
from dranspose.protocol import ReducerState


class XrdReducer:
    def __init__(self, parameters=None, context=None, state: ReducerState = None, **kwargs):
        self.rows = {}
        self.publish = {"label": parameters["label"].value,
                        "dranspose_version": state.dranspose_version,
                        "payload_version": state.payload_version or "",
                        "timer_calls": 0}

    def process_result(self, result: ResultData, parameters=None):
        self.rows[result.payload["frame"]] = result.payload["sum"]

    def timer(self):
        self.publish["timer_calls"] += 1
        return 0.5

    def finish(self, parameters=None):
        frames = sorted(self.rows)
        self.publish["frame"] = np.array(frames)
        self.publish["sum"] = np.array([self.rows[f] for f in frames])
"""


def stins_scan(path: Path, images: list[np.ndarray]) -> str:
    with DumpWriter(path) as dump:
        dump.write(0, {"xrd": StreamData("STINS", stream1.build_header(filename="", msg_number=0))})
        for i, image in enumerate(images):
            dump.write(i + 1, {"xrd": StreamData("STINS", stream1.build_image(image, i, i + 1))})
        end = len(images) + 1
        dump.write(end, {"xrd": StreamData("STINS", stream1.build_end(end))})
    return str(path)


def test_dranspose_01_repository_replayed_from_its_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = write_repo(
        tmp_path / "b308a-payloads",
        {
            "src/worker.py": port(DRANSPOSE_01_WORKER),
            "src/reducer.py": port(DRANSPOSE_01_REDUCER),
            "data/README": "masks",
        },
    )
    mask = np.ones((4, 4), dtype=np.uint16)
    mask[:, :2] = 0
    np.save(repo / "data" / "mask.npy", mask)
    has_git = git_repo(repo, tag="2024.11")
    images = [np.arange(16, dtype=np.uint16).reshape(4, 4) * (i + 1) for i in range(5)]
    capture = stins_scan(tmp_path / "xrd.cbors", images)
    monkeypatch.chdir(repo)  # as dranspose payloads run: from their repository
    s = run_replay(
        ReplayConfig(
            worker="src.worker:XrdWorker",
            reducer="src.reducer:XrdReducer",
            captures=[capture],
            parameters={"threshold": b"20"},
            workers=2,
            search=[Path(".")],  # --payload-path .
        )
    )
    assert s.ok, s.failures
    expected = []
    for image in images:
        masked = image * mask
        expected.append(int(masked[masked > 20].sum()))
    np.testing.assert_array_equal(s.publish["frame"], np.arange(5))
    np.testing.assert_array_equal(s.publish["sum"], expected)
    assert s.publish["label"] == "ring"
    assert s.publish["dranspose_version"] == DRANSPOSE_VERSION
    assert s.publish["payload_version"] == ("2024.11" if has_git else "")
    assert s.publish["timer_calls"] >= 1


# dranspose's newest branch: the reducer (and worker) declare a pydantic model of parameters.
PARAMETER_CLASS_PAYLOAD = """
from pydantic import BaseModel

from dranspose.event import EventData, ResultData


class PayloadParameters(BaseModel):
    roi1: str = "bla"
    number: int = 0
    complex: tuple[int, int] | None = None
    crazy: dict[str, dict[int, str]] = {}


class ParamWorker:
    parameter_class = PayloadParameters

    def __init__(self, *args, **kwargs):
        pass

    def process_event(self, event: EventData, parameters: PayloadParameters, tick=False):
        return {"event": event.event_number, "number": parameters.number,
                "complex": parameters.complex}


class ParamReducer:
    parameter_class = PayloadParameters

    def __init__(self, parameters: PayloadParameters = None, **kwargs):
        self.publish = {"roi1": parameters.roi1, "numbers": [], "crazy": str(parameters.crazy)}

    def process_result(self, result: ResultData, parameters: PayloadParameters = None):
        self.publish["numbers"].append(result.payload["number"] + sum(parameters.complex))
"""


def test_parameter_class_payload_replayed(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"src/params.py": port(PARAMETER_CLASS_PAYLOAD)})
    capture = stins_scan(tmp_path / "xrd.cbors", [np.zeros((2, 2), dtype=np.uint16)] * 3)
    s = run_replay(
        ReplayConfig(
            worker="src.params:ParamWorker",
            reducer="src.params:ParamReducer",
            captures=[capture],
            parameters={"number": b"5", "complex": b"[1, 2]", "crazy": b'{"a": {"3": "x"}}'},
            search=[repo],
        )
    )
    assert s.ok, s.failures
    assert s.unknown_parameters == []  # every field is a described parameter
    assert s.publish["roi1"] == "bla"
    assert s.publish["crazy"] == "{'a': {3: 'x'}}"
    assert s.publish["numbers"] == [8] * 5  # 5 + 1 + 2 for each of the 5 events
