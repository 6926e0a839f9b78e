"""Result files stay where the reducer allows them, readable, and never replace a result.

Pure: ``check_scan_id`` and ``result_path`` (the reducer's decision at arm time). Then a
deployment of service processes (``tango-dranspose serve``) refusing arms over ZeroMQ, and
writing its files with the mode the umask gives.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from tango_dranspose.core.scan import ArmRefused, check_scan_id
from tango_dranspose.runtime.control import ControlClient
from tango_dranspose.runtime.reducer import result_path
from tango_dranspose.runtime.scheduler import ArmError
from tango_dranspose.streams.stream1 import build_end, build_header, build_image
from tests.runtime.procs import REPO, Proc

# -- scan ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scan_id", "why"),
    [
        ("../../../tmp/x", "path separator"),
        ("/tmp/x", "path separator"),
        ("a\\..\\b", "path separator"),
        ("..", "'..'"),
        ("scan..1", "'..'"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("abc\u202egpj.h5", "control character"),  # a right-to-left override
        ("", "empty"),
        ("x" * 201, "201 characters"),
    ],
)
def test_a_scan_id_is_a_name_never_a_path(scan_id: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(ArmRefused, match=f"scan_id .* is refused: .*{why}") as refused:
        check_scan_id(scan_id)
    assert "\n" not in str(refused.value)  # one sentence, one line
    # The reducer refuses it as well, whoever armed it (a scheduler of another version).
    with pytest.raises(ArmRefused, match="is refused"):
        result_path({}, scan_id, tmp_path, [tmp_path])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scan_id", ["12", "scan 7", "tomo-2024.11_a", "x" * 200, "été"])
def test_names_are_accepted(scan_id: str) -> None:
    check_scan_id(scan_id)


# -- where the file goes ------------------------------------------------------------------


@dataclass
class Dirs:
    results: Path
    extra: Path
    outside: Path

    @property
    def allowed(self) -> list[Path]:
        return [self.results, self.extra]


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    d = Dirs(tmp_path / "results", tmp_path / "beamline", tmp_path / "outside")
    for p in (d.results, d.extra, d.outside):
        p.mkdir()
    return d


def test_an_output_file_inside_an_allowed_dir_is_used(dirs: Dirs) -> None:
    inside = dirs.extra / "sub" / "mine.h5"
    assert result_path({"output": str(inside)}, "s", dirs.results, dirs.allowed) == inside
    # A relative output_file is taken in the result directory, not the server's cwd.
    got = result_path({"output": "sub/mine.h5"}, "s", dirs.results, dirs.allowed)
    assert got == dirs.results / "sub" / "mine.h5"
    assert result_path({}, "s", dirs.results, dirs.allowed) == dirs.results / "s_processed.h5"


def test_an_absolute_output_file_outside_is_refused_naming_the_path_and_the_dirs(
    dirs: Dirs,
) -> None:
    target = dirs.outside / "x.h5"
    with pytest.raises(ArmRefused) as refused:
        result_path({"output": str(target)}, "s", dirs.results, dirs.allowed)
    assert str(refused.value) == (
        f"output_file {target} is outside the reducer's allowed result directories "
        f"({dirs.results}, {dirs.extra})"
    )
    # The traversal spelled relative to the result directory, and through an allowed one.
    for given in ("../outside/x.h5", f"{dirs.extra}/../outside/x.h5"):
        with pytest.raises(ArmRefused, match=f"resolves to {target}"):
            result_path({"output": given}, "s", dirs.results, dirs.allowed)
    # An allowed directory is not itself a file name.
    with pytest.raises(ArmRefused, match="is outside"):
        result_path({"output": str(dirs.extra)}, "s", dirs.results, dirs.allowed)
    assert list(dirs.outside.iterdir()) == []


def test_a_symlink_out_of_an_allowed_dir_is_refused(dirs: Dirs) -> None:
    (dirs.extra / "escape").symlink_to(dirs.outside, target_is_directory=True)
    (dirs.extra / "link.h5").symlink_to(dirs.outside / "target.h5")  # dangling
    for given, real in (
        (dirs.extra / "escape" / "x.h5", dirs.outside / "x.h5"),
        (dirs.extra / "link.h5", dirs.outside / "target.h5"),
    ):
        with pytest.raises(ArmRefused) as refused:
            result_path({"output": str(given)}, "s", dirs.results, dirs.allowed)
        assert f"output_file {given} (which resolves to {real}) is outside" in str(refused.value)
    # A scan directory whose result file name is a symlink out of it.
    (dirs.extra / "scans_s_processed.h5").symlink_to(dirs.outside / "other.h5")
    meta = {"scan_dir": str(dirs.extra), "scan_file": ["scans.dat"]}
    with pytest.raises(ArmRefused, match=r"the result file .*scans_s_processed.h5 .* is outside"):
        result_path(meta, "s", dirs.results, dirs.allowed)


def test_an_allowed_dir_reached_through_a_symlink_is_allowed(dirs: Dirs, tmp_path: Path) -> None:
    """/data -> /gpfs/data: a directory allowed by either name admits files under the other."""
    alias = tmp_path / "alias"
    alias.symlink_to(dirs.extra, target_is_directory=True)
    target = alias / "x.h5"
    assert result_path({"output": str(target)}, "s", None, [dirs.extra]) == target
    assert result_path({"output": str(dirs.extra / "y.h5")}, "s", None, [alias]) is not None


def test_a_scan_dir_outside_is_refused(dirs: Dirs) -> None:
    meta = {"scan_dir": str(dirs.outside), "scan_file": ["scans.dat"]}
    with pytest.raises(ArmRefused) as refused:
        result_path(meta, "7", dirs.results, dirs.allowed)
    assert str(refused.value).startswith(f"scan_dir {dirs.outside} is outside the reducer's")
    # Inside (an allowed directory itself, or below one): beside the raw data, named after it.
    # A scan_file with directories in it keeps only its name.
    meta = {"scan_dir": str(dirs.results), "scan_file": "scans.h5"}
    assert result_path(meta, "7", None, dirs.allowed) == dirs.results / "scans_7_processed.h5"
    meta = {"scan_dir": str(dirs.extra), "scan_file": ["../../outside/scans.dat"]}
    assert result_path(meta, "7", dirs.results, dirs.allowed) == (
        dirs.extra / "scans_7_processed.h5"
    )


def test_without_allowed_dirs_output_file_and_scan_dir_are_refused(dirs: Dirs) -> None:
    with pytest.raises(ArmRefused) as refused:
        result_path({"output": str(dirs.results / "x.h5")}, "s", dirs.results, [])
    assert str(refused.value) == (
        f"output_file {dirs.results / 'x.h5'} is refused: this reducer allows no result "
        "directory (its AllowedResultDirs property, or --allowed-result-dir)"
    )
    with pytest.raises(ArmRefused, match=r"scan_dir .* allows no result directory"):
        result_path({"scan_dir": str(dirs.results), "scan_file": "a.dat"}, "s", dirs.results, [])
    # The reducer's own result directory is its configuration, not the request's.
    assert result_path({}, "s", dirs.results, []) == dirs.results / "s_processed.h5"
    assert result_path({}, "s", None, []) is None


def test_an_existing_result_is_refused_unless_overwrite_is_asked(dirs: Dirs) -> None:
    existing = dirs.results / "s_processed.h5"
    existing.write_bytes(b"an earlier result")
    with pytest.raises(ArmRefused) as refused:
        result_path({}, "s", dirs.results, dirs.allowed)
    assert str(refused.value) == (
        f'the result file {existing} exists already; arm with "overwrite": true in the '
        "metadata to replace it"
    )
    # Only JSON true asks: a string is not a yes.
    with pytest.raises(ArmRefused, match="exists already"):
        result_path({"overwrite": "yes"}, "s", dirs.results, dirs.allowed)
    assert result_path({"overwrite": True}, "s", dirs.results, dirs.allowed) == existing
    assert existing.read_bytes() == b"an earlier result"  # deciding writes nothing


def test_unconfined_callers_may_write_anywhere(dirs: Dirs) -> None:
    """``allowed=None`` is for callers that arm their own scans in-process (the replay)."""
    target = dirs.outside / "replay.h5"
    assert result_path({"output": str(target)}, "s", None, None) == target
    with pytest.raises(ArmRefused, match="NUL"):
        result_path({"output": "/tmp/a\x00b"}, "s", None, None)


# -- a deployment of processes ------------------------------------------------------------

N = 4  # images per scan


@dataclass
class Crew:
    client: ControlClient
    camera: zmq.Socket[Any]
    results: Path
    extra: Path
    outside: Path

    def scan(self, scan_id: str, **request: Any) -> dict[str, Any]:
        """Arm, feed one series, wait for the end; returns the scan's status."""
        self.client.arm(
            {"cam": [[{"constraint": i}] for i in range(N)]}, scan_id=scan_id, **request
        )
        messages = [build_header("x.h5", 0)]
        messages += [build_image(np.zeros((2, 2), dtype=np.uint16), i, i + 1) for i in range(N)]
        messages.append(build_end(N + 1))
        for m in messages:
            self.camera.send_multipart(list(m))
        status: dict[str, Any] = self.client.wait(60)["scan"]
        assert status["state"] == "finished", status
        return status


@pytest.fixture(scope="module")
def crew(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crew]:
    base = tmp_path_factory.mktemp("confinement")
    results, extra, outside = base / "results", base / "beamline", base / "outside"
    for d in (results, extra, outside):
        d.mkdir()
    ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    camera = ctx.socket(zmq.PUSH)
    camera.setsockopt(zmq.LINGER, 0)
    camera.setsockopt(zmq.SNDTIMEO, 30_000)
    camera.bind("tcp://127.0.0.1:0")
    url = "pull+" + camera.getsockopt_string(zmq.LAST_ENDPOINT)
    payloads = ["--payload-path", str(REPO)]
    procs: list[Proc] = []
    try:
        procs.append(Proc("serve", "scheduler", name="scheduler"))
        control, client_address = procs[0].expect("control"), procs[0].expect("client")
        common = ("--scheduler", control)
        procs.append(Proc("serve", "ingester", "--name", "ing", *common,
                          "--stream", f"cam:STINS={url}", name="ing"))  # fmt: skip
        procs.append(Proc("serve", "worker", "--name", "w0", *common,
                          "--worker-class", "tests.runtime.payloads:FrameSumWorker",
                          *payloads, name="w0"))  # fmt: skip
        # The reducer runs under umask 002 (a group-shared beamline account): the child
        # inherits the umask at fork, so it is set around the start only.
        old = os.umask(0o002)
        try:
            procs.append(Proc("serve", "reducer", "--name", "red", *common,
                              "--reducer-class", "tests.runtime.payloads:CollectReducer",
                              "--output-dir", str(results),
                              "--allowed-result-dir", str(results),
                              "--allowed-result-dir", str(extra),
                              *payloads, name="red"))  # fmt: skip
        finally:
            os.umask(old)
        client = ControlClient(client_address)
        client.wait_for({"ingester": 1, "worker": 1, "reducer": 1}, 90)
        yield Crew(client, camera, results, extra, outside)
    finally:
        for p in procs:
            p.stop()
        ctx.destroy(0)


def refused(crew: Crew, scan_id: str, **request: Any) -> str:
    with pytest.raises(ArmError) as exc:
        crew.client.arm({"cam": [[{"constraint": 0}]]}, scan_id=scan_id, **request)
    return str(exc.value)


def test_the_deployed_reducer_refuses_paths_outside_and_the_pipeline_stays_usable(
    crew: Crew,
) -> None:
    # The probe of issue 13: a scan id that climbs out of the result directory.
    why = refused(crew, "../../x")
    assert why.startswith("scan_id '../../x' is refused: it contains a path separator")
    assert not (crew.results.parent.parent / "x_processed.h5").exists()
    why = refused(crew, "o1", output_file=str(crew.outside / "x.h5"))
    assert why == (
        f"arming failed: red: output_file {crew.outside / 'x.h5'} is outside the reducer's "
        f"allowed result directories ({crew.results}, {crew.extra})"
    )
    why = refused(crew, "o2", metadata={"scan_dir": str(crew.outside), "scan_file": "s.dat"})
    assert f"red: scan_dir {crew.outside} is outside" in why
    assert list(crew.outside.iterdir()) == []
    # The next arm is served as if nothing had happened.
    crew.scan("plain")
    assert (crew.results / "plain_processed.h5").exists()


def test_deployed_result_files_have_the_umask_mode_and_are_not_replaced_unasked(
    crew: Crew,
) -> None:
    target = crew.extra / "chosen.h5"
    status = crew.scan("chosen", output_file=str(target))
    assert status["reducer"]["output"] == str(target)
    # 0666 under the reducer's umask 002, not mkstemp's 0600.
    assert stat.S_IMODE(target.stat().st_mode) == 0o664
    written = target.stat().st_mtime_ns
    why = refused(crew, "again", output_file=str(target))
    assert why == (
        f'arming failed: red: the result file {target} exists already; arm with "overwrite": '
        "true in the metadata to replace it"
    )
    assert target.stat().st_mtime_ns == written
    crew.scan("again", output_file=str(target), metadata={"overwrite": True})
    assert target.stat().st_mtime_ns != written
    assert stat.S_IMODE(target.stat().st_mode) == 0o664
    assert sorted(p.name for p in crew.extra.iterdir()) == ["chosen.h5"]  # no temporaries
