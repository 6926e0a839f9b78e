from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tango_dranspose.core.h5tree import read_tree, write_file


def test_values_hdf5_cannot_hold_are_skipped_and_named(tmp_path: Path) -> None:
    tree = {
        "ok": np.arange(3),
        "names": ["a", "b"],
        "objects": np.array([1, None], dtype=object),
        "mixed": [{"a": 1}, 2],
        "group": {"x": 1.5, "x_attrs": {"units": "mm"}},
    }
    path = tmp_path / "r.h5"
    skipped = write_file(path, tree)
    assert sorted(s.split(" ")[0] for s in skipped) == ["/mixed", "/objects"]
    with h5py.File(path, "r") as f:
        back = read_tree(f)
        assert f["group/x"].attrs["units"] == "mm"
    assert list(back["ok"]) == [0, 1, 2]
    assert list(back["names"]) == ["a", "b"]
    assert "objects" not in back and back["group"]["x"] == 1.5


def _write_under_umask(path: Path, umask: int, *, overwrite: bool = True) -> int:
    """Write ``path`` in a fresh process with ``umask``; returns the file's permission bits.

    A subprocess: the umask is per process, and changing this one's would race any thread."""
    code = (
        "import os, sys\n"
        f"os.umask({umask})\n"
        "from tango_dranspose.core.h5tree import write_file\n"
        f"write_file(sys.argv[1], {{'x': 1}}, overwrite={overwrite})\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    # A new file, and a rewrite of it (the reducer rewrites its file during a scan).
    path = tmp_path / "r.h5"
    assert _write_under_umask(path, umask, overwrite=False) == mode
    path.chmod(0o600)
    assert _write_under_umask(path, umask) == mode


def test_without_overwrite_an_existing_file_is_kept_and_nothing_left_behind(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.h5"
    write_file(path, {"x": 1})
    with pytest.raises(FileExistsError, match="exists already"):
        write_file(path, {"x": 2}, overwrite=False)
    with h5py.File(path, "r") as f:
        assert f["x"][()] == 1
    # A dangling symlink is a name that exists too: it is not followed or replaced.
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "elsewhere.h5")
    with pytest.raises(FileExistsError):
        write_file(link, {"x": 3}, overwrite=False)
    assert link.is_symlink() and not (tmp_path / "elsewhere.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.h5", "r.h5"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_file(path, {"x": 1})

    def boom(f: h5py.File) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_file(path, {"x": 2}, extra=boom)
    with h5py.File(path, "r") as f:
        assert f["x"][()] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]
