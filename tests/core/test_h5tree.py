from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

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
