"""``tango-dranspose port``: a dranspose payload repository ported by rewriting its imports."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tango_dranspose.cli import main
from tango_dranspose.compat.port import port_source, port_tree
from tango_dranspose.examples.demo_data import write_demo_scan
from tango_dranspose.runtime.replay import ReplayConfig, run_replay

# A payload as it is written for dranspose: every kind of import a repository has.
WORKER = '''\
"""Sum of each image; uses dranspose.event in a docstring, which stays."""
import json  # dranspose.event in a comment stays too
import dranspose.protocol
import dranspose.event as ev
from dranspose.middlewares.stream1 import parse as parse_stins
from dranspose.data.stream1 import (
    Stream1Data,
    Stream1Start,
)
from dranspose.parameters import IntParameter

NAME = "dranspose.event"
label = "Å"; from dranspose.parameters import StrParameter  # non-ASCII before the import


class Worker:
    def __init__(self, *args, **kwargs):
        self.name = dranspose.protocol.WorkerName("w")

    @staticmethod
    def describe_parameters():
        return [IntParameter(name="scale", default=1), StrParameter(name="tag", default="")]

    def process_event(self, event: ev.EventData, parameters=None, *args, **kwargs):
        packet = parse_stins(event.streams["xrd"])
        if isinstance(packet, Stream1Start):
            return None
        if isinstance(packet, Stream1Data):
            return {"frame": packet.frame, "sum": float(packet.data.sum())}
'''

REDUCER = """\
from dranspose.event import ResultData


class Reducer:
    def __init__(self, *args, **kwargs):
        self.publish = {"sums": {}}

    def process_result(self, result: ResultData, parameters=None):
        if result.payload:
            scale = parameters["scale"].value
            self.publish["sums"][str(result.payload["frame"])] = result.payload["sum"] * scale
"""


def repository(root: Path, package: str) -> Path:
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "worker.py").write_text(WORKER, encoding="utf-8")
    # Windows line endings must survive the rewrite.
    (pkg / "reducer.py").write_bytes(REDUCER.replace("\n", "\r\n").encode())
    (root / "README.md").write_text("from dranspose.event import EventData\n")
    return pkg


def test_ported_repository_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = repository(tmp_path / "repo", "ported_sum")
    code = main(["port", str(tmp_path / "repo")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ported ported_sum/worker.py (6 import statement(s))" in out
    assert "ported ported_sum/reducer.py (1 import statement(s))" in out
    assert out.strip().endswith("2 file(s) ported; all ported")

    worker = (pkg / "worker.py").read_text(encoding="utf-8")
    assert "from dranspose" not in worker and "import dranspose" not in worker
    assert "from tango_dranspose.compat.data.stream1 import (\n    Stream1Data," in worker
    assert 'label = "Å"; from tango_dranspose.compat.parameters import StrParameter' in worker
    assert "self.name = tango_dranspose.compat.protocol.WorkerName" in worker
    # Only code changed: the docstring, the comment and the string keep their text.
    assert "uses dranspose.event in a docstring" in worker
    assert "# dranspose.event in a comment" in worker
    assert 'NAME = "dranspose.event"' in worker
    reducer = (pkg / "reducer.py").read_bytes()
    assert (
        reducer
        == REDUCER.replace("\n", "\r\n").replace("dranspose.", "tango_dranspose.compat.").encode()
    )
    # Not a Python file: untouched.
    assert (tmp_path / "repo" / "README.md").read_text().startswith("from dranspose.event")

    scan = write_demo_scan(tmp_path / "scan.cbors", frames=5)
    s = run_replay(
        ReplayConfig(
            worker="ported_sum.worker:Worker",
            reducer="ported_sum.reducer:Reducer",
            captures=[str(scan)],
            parameters={"scale": b"2"},
            search=[tmp_path / "repo"],
        )
    )
    assert s.ok, s.failures
    assert sorted(s.publish["sums"]) == ["0", "1", "2", "3", "4"]
    assert all(np.isfinite(v) and v > 0 for v in s.publish["sums"].values())


def test_dry_run_shows_a_diff_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = repository(tmp_path, "dry_sum")
    before = (pkg / "worker.py").read_bytes()
    code = main(["port", "--dry-run", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert (pkg / "worker.py").read_bytes() == before
    assert "--- a/dry_sum/worker.py" in out
    assert "-from dranspose.parameters import IntParameter" in out
    assert "+from tango_dranspose.compat.parameters import IntParameter" in out
    assert "would port dry_sum/reducer.py" in out


UNPORTABLE = """\
import redis
from dranspose.worker import Worker as DWorker
from dranspose.protocol import RedisKeys, WorkerName
from dranspose.data.stream1 import Stream1Start

CONTROLLER = "http://dranspose-controller:5000/api/v1/mapping"
REDIS = "redis://redis:6379/0"


def header():
    return Stream1Start(filename="", msg_number=0).to_stream_data()


def again():
    return Stream1Start(filename="", msg_number=1).to_stream_data()
"""


def test_what_cannot_be_ported_is_listed_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "legacy.py").write_text(UNPORTABLE)
    (tmp_path / "src" / "py2.py").write_text("print 'hello'\n")
    (tmp_path / "requirements.txt").write_text("numpy\ndranspose>=0.2\n")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "dep.py").write_text("from dranspose.worker import Worker\n")
    code = main(["port", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    problems = [line for line in lines if not line.startswith("ported")][:-1]
    expected = [
        ("requirements.txt:2:", "depends on dranspose"),
        ("src/legacy.py:1:", "imports redis: Redis"),
        ("src/legacy.py:2:", "dranspose.worker is not provided by tango_dranspose.compat"),
        ("src/legacy.py:3:", "dranspose.protocol has no RedisKeys in tango_dranspose.compat"),
        ("src/legacy.py:6:", "calls dranspose's HTTP API"),
        ("src/legacy.py:7:", "uses Redis ('redis://redis:6379/0')"),
        ("src/legacy.py:11:", ".to_stream_data() is not provided"),
        ("src/py2.py:1:", "cannot parse it (SyntaxError)"),
    ]
    assert len(problems) == len(expected), problems
    for line, (where, what) in zip(sorted(problems), sorted(expected), strict=True):
        assert line.startswith(where) and what in line, line
    assert "(and 1 more use(s) in this file)" in next(p for p in problems if "to_stream" in p)
    assert lines[-1] == "1 file(s) ported; 8 thing(s) need a person"
    # The provided imports are ported, the unprovided one is left for a person to see.
    legacy = (tmp_path / "src" / "legacy.py").read_text()
    assert "from dranspose.worker import Worker as DWorker" in legacy
    assert "from tango_dranspose.compat.protocol import RedisKeys, WorkerName" in legacy
    assert "from tango_dranspose.compat.data.stream1 import Stream1Start" in legacy
    # Hidden directories (virtual environments) are not the payload's code.
    assert (tmp_path / ".venv" / "lib" / "dep.py").read_text().startswith("from dranspose")


def test_nothing_to_port_is_success() -> None:
    port = port_source(
        "import numpy\nfrom tango_dranspose.compat.event import EventData\n", Path("x.py")
    )
    assert not port.changed and not port.problems and port.imports == 0


def test_not_a_directory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["port", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_port_tree_reports_without_writing(tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(textwrap.dedent("from dranspose import event\n"))
    report = port_tree(tmp_path)
    assert report.ok and [f.path for f in report.changed] == [Path("w.py")]
    assert report.changed[0].ported == "from tango_dranspose.compat import event\n"
    assert (tmp_path / "w.py").read_text() == "from dranspose import event\n"
