from __future__ import annotations

import numpy as np

from tango_dranspose.core.publishview import assign_names, base_name, leaves


def by_path(tree: dict) -> dict:
    return {leaf.path: leaf for leaf in leaves(tree)}


def test_kinds_of_every_leaf() -> None:
    tree = {
        "count": 3,
        "flag": np.bool_(True),
        "mean": np.float32(1.5),
        "title": "scan 7",
        "names": ["a", "b"],
        "azint": {"I": np.arange(5.0), "q": [0.1, 0.2, 0.3], "I_attrs": {"units": "counts"}},
        "image": np.zeros((4, 3), dtype=np.uint16),
        "cube": np.zeros((2, 2, 2)),
        "empty": np.zeros(0),
        "mixed": [1, "a"],
        "_hidden": 1,
        "count_attrs": {"long_name": "events", "description": "how many"},
    }
    got = by_path(tree)
    assert (got["count"].kind, got["count"].dtype, got["count"].value) == ("scalar", "int64", 3)
    assert got["count"].label == "events" and got["count"].description == "how many"
    assert (got["flag"].kind, got["flag"].value) == ("scalar", True)
    assert got["mean"].dtype == "float64" and got["mean"].value == 1.5
    assert (got["title"].kind, got["title"].dtype) == ("scalar", "str")
    assert (got["names"].kind, got["names"].value) == ("spectrum", ["a", "b"])
    assert got["azint/I"].kind == "spectrum" and got["azint/I"].unit == "counts"
    assert got["azint/q"].kind == "spectrum" and got["azint/q"].dtype == "float64"
    assert got["image"].kind == "image" and got["image"].dtype == "uint16"
    assert got["image"].nbytes == 24
    assert got["cube"].kind == "" and "3 dimensions" in got["cube"].problem
    assert got["empty"].kind == "" and got["mixed"].kind == ""
    assert "_hidden" not in got and "count_attrs" not in got


def test_names_follow_the_rule_and_collisions_are_deterministic() -> None:
    assert base_name("azint/I") == "azint_I"
    assert base_name("roi 1/sum") == "roi_1_sum"
    assert base_name("1st") == "r_1st"
    paths = ["a/b", "a_b", "A/B"]
    names = assign_names(paths)
    assert names == assign_names(list(reversed(paths)))
    assert sorted(n.lower() for n in names.values()) == ["a_b", "a_b_2", "a_b_3"]
    assert names["A/B"] == "A_B"  # sorts first, keeps the plain name
    taken = assign_names(["state", "Results"], taken=["State", "Status", "Results"])
    assert taken == {"Results": "Results_2", "state": "state_2"}
