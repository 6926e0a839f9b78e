from __future__ import annotations

import importlib.metadata
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from tango_dranspose.compat.protocol import ReducerState, WorkerState
from tango_dranspose.core import payload as payload_mod
from tango_dranspose.core.events import EventData, ResultData
from tango_dranspose.core.parameters import ParameterSet, WorkParameter
from tango_dranspose.core.payload import (
    DRANSPOSE_VERSION,
    PayloadError,
    ReducerPayload,
    WorkerPayload,
    close_payload,
    describe_class,
    enter_payload_root,
    load_class,
    payload_root,
    payload_state,
    payload_version,
)
from tango_dranspose.core.states import WorkerState as CoreWorkerState
from tests.core.payload_layouts import fresh_imports, git_repo, write_repo


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    with fresh_imports():
        yield


# A beamline payload repository: src/ without __init__.py, helpers imported both ways, a mask
# in data/ opened relative to the repository, a calibration next to the module.
BEAMLINE = {
    "src/worker.py": """
        from pathlib import Path

        import numpy as np

        from src.helpers import scale
        from .geometry import PIXELS


        class Worker:
            def __init__(self, parameters=None, context=None, state=None, **kwargs):
                self.mask = np.load("data/mask.npy")
                self.calib = float((Path(__file__).parent / "calib.txt").read_text())

            def process_event(self, event, parameters=None, tick=False):
                return scale(event.event_number) * self.calib + PIXELS + int(self.mask.sum())
        """,
    "src/reducer.py": """
        class Reducer:
            def __init__(self, parameters=None, context=None, state=None):
                self.publish = {"sum": 0}

            def process_result(self, result, parameters=None):
                self.publish["sum"] += result.payload
        """,
    "src/helpers.py": "def scale(x):\n    return 10 * x\n",
    "src/geometry.py": "PIXELS = 1000\n",
    "src/calib.txt": "2.0\n",
    "README.md": "payloads of a beamline\n",
}


def beamline_repo(root: Path) -> Path:
    write_repo(root, BEAMLINE)
    (root / "data").mkdir()
    np.save(root / "data" / "mask.npy", np.ones((2, 3), dtype=np.uint8))
    return root


def test_namespace_package_from_a_search_directory(tmp_path: Path) -> None:
    repo = beamline_repo(tmp_path / "repo")
    cls = load_class("src.worker:Worker", [repo])
    assert cls.__module__ == "src.worker"
    assert Path(sys.modules["src.worker"].__file__ or "") == repo / "src" / "worker.py"
    assert load_class("src.reducer:Reducer", [repo]).__name__ == "Reducer"
    # Appended so that the payload's later imports find its siblings, behind everything else.
    assert sys.path[-1] == str(repo) and sys.path.count(str(repo)) == 1
    assert payload_root(cls) == repo


def test_payload_path_dot_and_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = beamline_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    assert payload_root(load_class("src.worker:Worker", ["."])) == repo
    # The working directory is searched without being named, as dranspose does ...
    assert payload_root(load_class("src.reducer:Reducer")) == repo
    # ... and "." was made absolute: leaving the directory does not lose the package.
    monkeypatch.chdir(tmp_path)
    assert load_class("src.worker:Worker").__name__ == "Worker"


def test_data_files_relative_to_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = beamline_repo(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cls = load_class("src.worker:Worker", [repo])
    with pytest.raises(PayloadError, match=r"mask\.npy"):
        WorkerPayload(cls, parameters={}, context={})
    assert enter_payload_root(cls) == repo
    assert Path.cwd() == repo
    w = WorkerPayload(cls, parameters={}, context={})
    # 3 * 10 * 2.0 (calibration beside the module) + 1000 (relative import) + 6 (the mask)
    assert w.process_event(EventData(3, {}), {}, False) == 1066.0


def test_an_installed_payload_has_no_root_and_keeps_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cls = load_class("json.decoder:JSONDecoder")
    assert payload_root(cls) is None
    assert enter_payload_root(cls) is None
    assert Path.cwd() == tmp_path


def test_a_regular_package_and_a_plain_module(tmp_path: Path) -> None:
    write_repo(
        tmp_path,
        {
            "tdp_pkg/__init__.py": "",
            "tdp_pkg/sub/__init__.py": "",
            "tdp_pkg/sub/mod.py": "class W:\n    def process_event(self, e):\n        return 1\n",
            "tdp_single.py": "class W:\n    def process_event(self, e):\n        return 2\n",
        },
    )
    a = WorkerPayload(load_class("tdp_pkg.sub.mod:W", [tmp_path]), parameters={}, context={})
    b = WorkerPayload(load_class("tdp_single:W", [tmp_path]), parameters={}, context={})
    assert a.process_event(EventData(0, {}), {}, False) == 1
    assert b.process_event(EventData(0, {}), {}, False) == 2


def test_the_search_directory_wins_over_an_importable_package_of_the_same_name(
    tmp_path: Path,
) -> None:
    # "tdp_shadow" is importable from the first directory (as an installed package would be)
    # and also in the search directory: the search directory is the one asked for.
    installed = write_repo(tmp_path / "installed", {"tdp_shadow/__init__.py": "WHERE = 'site'\n"})
    repo = write_repo(tmp_path / "repo", {"tdp_shadow/__init__.py": "class W:\n    pass\n"})
    sys.path.append(str(installed))
    assert load_class("tdp_shadow:W", [repo]).__module__ == "tdp_shadow"
    assert not hasattr(sys.modules["tdp_shadow"], "WHERE")


def test_what_was_tried_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = write_repo(tmp_path / "repo", {"src/reducer.py": "", "data/x.txt": ""})
    other = write_repo(tmp_path / "other", {"notes.txt": ""})
    monkeypatch.chdir(other)
    with pytest.raises(PayloadError) as err:
        load_class("src.worker:Worker", [repo, tmp_path / "missing"])
    text = str(err.value)
    assert "cannot import 'src.worker'" in text
    assert f"found {repo / 'src'}/ (namespace package) but no worker.py in it" in text
    assert "it has reducer.py" in text
    assert f"{tmp_path / 'missing'}: no such directory" in text
    assert f"{other}: no src/ in it (it has notes.txt)" in text


def test_a_failed_load_leaves_nothing_behind(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"src/worker.py": "class Worker(:\n"})
    before = list(sys.path)
    with pytest.raises(PayloadError, match="SyntaxError"):
        load_class("src.worker:Worker", [repo])
    assert "src" not in sys.modules and sys.path == before
    write_repo(repo, {"src/worker.py": "class Worker:\n    pass\n"})
    assert load_class("src.worker:Worker", [repo]).__name__ == "Worker"


def test_a_second_package_of_the_same_name_is_refused(tmp_path: Path) -> None:
    a = write_repo(tmp_path / "a", {"src/worker.py": "class Worker:\n    SIDE = 'a'\n"})
    b = write_repo(tmp_path / "b", {"src/worker.py": "class Worker:\n    SIDE = 'b'\n"})
    assert load_class("src.worker:Worker", [a]).SIDE == "a"  # type: ignore[attr-defined]
    with pytest.raises(PayloadError, match=f"'src' is already loaded from {a}"):
        load_class("src.worker:Worker", [b])
    assert load_class("src.worker:Worker", [a]).SIDE == "a"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nocolon", "package.module:ClassName"),
        ("tdp_missing_mod:X", "cannot import 'tdp_missing_mod'"),
        ("json:NoSuchClass", "has no 'NoSuchClass'"),
        ("json:dumps", "is not a class"),
    ],
)
def test_clear_errors(spec: str, words: str) -> None:
    with pytest.raises(PayloadError, match=words):
        load_class(spec)


def test_import_error_inside_payload_is_reported(tmp_path: Path) -> None:
    write_repo(tmp_path, {"src/worker.py": "import tdp_not_installed_anywhere\n"})
    with pytest.raises(PayloadError, match="it imports 'tdp_not_installed_anywhere'"):
        load_class("src.worker:W", [tmp_path])


# ---------------------------------------------------------------------------------------------
# Calling conventions


def make(tmp_path: Path, body: str, name: str = "W") -> type:
    write_repo(tmp_path, {"src/mod.py": body})
    return load_class(f"src.mod:{name}", [tmp_path])


def test_dranspose_keywords_and_extra_positionals(tmp_path: Path) -> None:
    cls = make(
        tmp_path,
        """
        class W:
            def __init__(self, *args, **kwargs):
                self.kwargs = kwargs
            def process_event(self, event, parameters=None, *args, **kwargs):
                return (event.event_number, args)
        """,
    )
    w = WorkerPayload(cls, parameters={}, context={"x": 1})
    assert w.instance.kwargs["context"] == {"x": 1}
    assert w.process_event(EventData(4, {}), {}, True) == (4, (True,))


def test_old_style_signatures(tmp_path: Path) -> None:
    cls = make(
        tmp_path,
        """
        class W:
            def __init__(self):
                pass
            def process_event(self, event):
                return event.event_number * 2
            def finish(self):
                self.finished = True
        """,
    )
    w = WorkerPayload(cls, parameters={}, context={})
    assert w.process_event(EventData(5, {}), {}, False) == 10
    w.finish({})
    assert w.instance.finished is True


def test_dranspose_01_timer_without_parameters(tmp_path: Path) -> None:
    cls = make(
        tmp_path,
        """
        class R:
            def __init__(self, **kwargs):
                self.calls = 0
            def process_result(self, result, parameters=None):
                pass
            def timer(self):
                self.calls += 1
                return 0.25
        """,
        "R",
    )
    r = ReducerPayload(cls, parameters={}, context={})
    assert r.has_timer
    assert r.timer({}) == 0.25
    assert r.instance.calls == 1


def test_keyword_only_and_kwargs_receive_by_name(tmp_path: Path) -> None:
    cls = make(
        tmp_path,
        """
        class R:
            def process_result(self, *args, parameters=None, **kwargs):
                self.seen = (args, parameters)
            def timer(self, **kwargs):
                return kwargs["parameters"]["t"].value
            def finish(self, *, parameters):
                self.finished = parameters
            def close(self, **kwargs):
                kwargs["context"]["closed"] = True
        """,
        "R",
    )
    params = {"t": WorkParameter("t", 3.0, b"3.0")}
    r = ReducerPayload(cls, parameters=params, context={})
    r.process_result(ResultData(1, "w", 7, "h"), params)
    args, parameters = r.instance.seen
    assert parameters is params and args[1] is params
    assert r.timer(params) == 3.0
    r.finish(params)
    assert r.instance.finished is params
    ctx: dict[str, Any] = {}
    close_payload(r.instance, ctx)
    assert ctx == {"closed": True}


def test_unsatisfiable_signatures_fail_when_constructed(tmp_path: Path) -> None:
    cls = make(
        tmp_path,
        """
        class W:
            def process_event(self, event, parameters, tick, detector):
                pass
        class NoProcess:
            pass
        """,
    )
    with pytest.raises(PayloadError, match="needs 'detector', which dranspose does not pass"):
        WorkerPayload(cls, parameters={}, context={})
    nop = load_class("src.mod:NoProcess", [tmp_path])
    with pytest.raises(PayloadError, match=r"NoProcess has no method process_event\(\)"):
        WorkerPayload(nop, parameters={}, context={})


def test_signatures_are_inspected_once_not_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = make(
        tmp_path,
        """
        class W:
            def process_event(self, event):
                return event.event_number
            def get_tick_interval(self):
                return 2
        """,
    )
    calls = []
    real = inspect.signature

    def counting(fn: Any, *a: Any, **kw: Any) -> inspect.Signature:
        calls.append(fn)
        return real(fn, *a, **kw)

    monkeypatch.setattr(payload_mod.inspect, "signature", counting)
    w = WorkerPayload(cls, parameters={}, context={})
    after_construction = len(calls)
    assert sum(w.process_event(EventData(i, {}), {}, False) for i in range(100)) == 4950
    assert w.tick_interval({}) == 2.0
    assert len(calls) == after_construction


# ---------------------------------------------------------------------------------------------
# state


STATEFUL = """
class Worker:
    def __init__(self, parameters=None, context=None, state=None):
        self.state = state
    def process_event(self, event, parameters=None, tick=False):
        return None

class Reducer:
    def __init__(self, parameters=None, context=None, state=None):
        self.publish = {"dranspose_version": state.dranspose_version,
                        "payload_version": state.payload_version, "name": state.name}
    def process_result(self, result, parameters=None):
        pass
"""


def test_state_carries_the_versions_dranspose_gives(tmp_path: Path) -> None:
    write_repo(tmp_path, {"src/both.py": STATEFUL})
    has_git = git_repo(tmp_path, tag="v1.4")
    r = ReducerPayload(load_class("src.both:Reducer", [tmp_path]), parameters={}, context={})
    assert isinstance(r.state, ReducerState)
    assert r.publish == {
        "dranspose_version": DRANSPOSE_VERSION,
        "payload_version": "v1.4" if has_git else None,
        "name": "reducer",
    }
    w = WorkerPayload(load_class("src.both:Worker", [tmp_path]), parameters={}, context={})
    assert isinstance(w.instance.state, WorkerState)
    assert w.instance.state.name == "worker"


def test_a_changed_checkout_is_described_dirty(tmp_path: Path) -> None:
    write_repo(tmp_path, {"src/both.py": STATEFUL})
    if not git_repo(tmp_path, tag="v2"):
        pytest.skip("no git executable")
    write_repo(tmp_path, {"src/both.py": STATEFUL + "\n# changed\n"})
    assert payload_version(load_class("src.both:Reducer", [tmp_path])) == "v2-dirty"


def test_no_git_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_repo(tmp_path, {"src/both.py": STATEFUL})
    # A directory outside any repository: git says so, and the version is unknown.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert payload_version(load_class("src.both:Reducer", [tmp_path])) is None


def test_an_installed_package_reports_its_distribution_version() -> None:
    assert payload_version(pydantic.BaseModel) == importlib.metadata.version("pydantic")


def test_a_state_from_the_runtime_is_completed(tmp_path: Path) -> None:
    write_repo(tmp_path, {"src/both.py": STATEFUL})
    given = CoreWorkerState(name="w3", scan_id="scan-7", tags=["debug"])
    w = WorkerPayload(
        load_class("src.both:Worker", [tmp_path]), parameters={}, context={}, state=given
    )
    state = w.instance.state
    assert (state.name, state.scan_id, state.tags) == ("w3", "scan-7", ["debug"])
    assert state.dranspose_version == DRANSPOSE_VERSION
    assert state.mapreduce_version is None
    assert payload_state("worker", name="w9").name == "w9"


def test_payload_tests_can_build_states_as_with_dranspose() -> None:
    # Payload repositories' own tests construct states by hand; dranspose defaults the versions.
    state = WorkerState(name="test")
    assert state.dranspose_version is None and state.tags == ["generic"]


# ---------------------------------------------------------------------------------------------
# parameters


def test_describe_parameters_accepts_dicts() -> None:
    class P:
        @staticmethod
        def describe_parameters() -> list[dict[str, Any]]:
            return [{"name": "a", "dtype": "int", "default": 2}]

    assert describe_class(P)["a"].default_value() == 2


PARAMETER_CLASS = """
from pydantic import BaseModel, Field


class Roi(BaseModel):
    x: tuple[int, int] = (0, 10)
    y: tuple[int, int] = (0, 10)


class Params(BaseModel):
    roi1: str = "bla"
    number: int = Field(0, ge=0, description="how many")
    threshold: float = 0.5
    blob: bytes = b"\\x00"
    roi: Roi = Roi()
    crazy: dict[str, dict[int, str]] = {}


class Reducer:
    parameter_class = Params

    def __init__(self, parameters=None, context=None, state=None):
        self.seen = [("init", parameters)]
        self.publish = {}

    def process_result(self, result, parameters=None):
        self.seen.append(("result", parameters))

    def timer(self, parameters):
        self.seen.append(("timer", parameters))
        return parameters.threshold

    def finish(self, parameters=None):
        self.seen.append(("finish", parameters))


class Broken:
    parameter_class = dict

    def process_result(self, result, parameters=None):
        pass
"""


def test_parameter_class_payload_receives_its_model(tmp_path: Path) -> None:
    write_repo(tmp_path, {"src/reducer.py": PARAMETER_CLASS})
    cls = load_class("src.reducer:Reducer", [tmp_path])
    descriptions = describe_class(cls)
    assert sorted(descriptions) == ["blob", "crazy", "number", "roi", "roi1", "threshold"]
    first = ParameterSet(descriptions, {"number": b"4", "roi": b'{"x": [2, 5]}'}).as_dict()
    r = ReducerPayload(cls, parameters=first, context={})
    r.process_result(ResultData(1, "w", 0, "h"), first)
    assert r.timer(first) == 0.5
    switched = ParameterSet(descriptions, {"threshold": b"2.0"}).as_dict()
    r.process_result(ResultData(2, "w", 0, "h"), switched)
    r.finish(switched)
    kinds = [k for k, _ in r.instance.seen]
    models = [m for _, m in r.instance.seen]
    assert kinds == ["init", "result", "timer", "result", "finish"]
    model = type(models[0])
    assert model.__name__ == "Params"
    assert models[0].number == 4 and models[0].roi.x == (2, 5) and models[0].roi.y == (0, 10)
    # Built once per parameter set: the same instance until the set switches.
    assert models[0] is models[1] is models[2]
    assert models[3] is models[4] and models[3].threshold == 2.0 and models[3].number == 0


def test_parameter_class_errors_name_the_parameter(tmp_path: Path) -> None:
    write_repo(tmp_path, {"src/reducer.py": PARAMETER_CLASS})
    cls = load_class("src.reducer:Reducer", [tmp_path])
    descriptions = describe_class(cls)
    bad = ParameterSet(descriptions, {"number": b"-1"}).as_dict()
    with pytest.raises(PayloadError, match="parameter 'number': Input should be greater than"):
        ReducerPayload(cls, parameters=bad, context={})
    good = ParameterSet(descriptions, {}).as_dict()
    r = ReducerPayload(cls, parameters=good, context={})
    nested = ParameterSet(descriptions, {"roi": b'{"x": [1]}'}).as_dict()
    with pytest.raises(PayloadError, match=r"parameter 'roi\.x"):
        r.process_result(ResultData(1, "w", 0, "h"), nested)
    with pytest.raises(PayloadError, match="must be a pydantic BaseModel class"):
        describe_class(load_class("src.reducer:Broken", [tmp_path]))
