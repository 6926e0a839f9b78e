from __future__ import annotations

import json
from pathlib import Path

import pytest

from tango_dranspose.core.parameters import (
    BinaryParameter,
    BoolParameter,
    FloatParameter,
    IntParameter,
    ParameterError,
    ParameterSet,
    StrParameter,
    describe,
    load_parameter_file,
)


def descs() -> dict:
    return describe(
        [
            StrParameter(name="roi", description="ROI as JSON", default="[0, 1]"),
            IntParameter(name="n", default=3),
            FloatParameter(name="thr"),
            BoolParameter(name="flag"),
            BinaryParameter(name="mask"),
            {"name": "legacy", "dtype": "file"},
        ]
    )


def test_defaults_and_typed_values() -> None:
    ps = ParameterSet(descs(), {"n": b"7", "thr": b"2.5", "flag": b"True", "mask": b"\x00\x01"})
    v = ps.as_dict()
    assert v["roi"].value == "[0, 1]" and json.loads(v["roi"].data) == [0, 1]
    assert v["n"].value == 7 and v["thr"].value == 2.5 and v["flag"].value is True
    assert v["mask"].value == b"\x00\x01"
    assert v["legacy"].value == b""
    assert ParameterSet(descs(), {"flag": b"true"}).as_dict()["flag"].value is False


def test_undescribed_parameters_have_no_value() -> None:
    ps = ParameterSet(descs(), {"other": b"x"})
    assert ps.as_dict()["other"].value is None
    assert ps.unknown() == ["other"]


def test_hash_depends_on_content_only() -> None:
    a = ParameterSet(descs(), {"n": b"7"})
    assert a.hash == ParameterSet(descs(), {"n": b"7"}).hash
    assert a.hash != ParameterSet(descs(), {"n": b"8"}).hash
    # Setting a parameter to its default is the same parameter set.
    assert ParameterSet(descs(), {"n": b"3"}).hash == ParameterSet(descs()).hash


def test_ill_typed_value_names_the_parameter() -> None:
    with pytest.raises(ParameterError, match="'n' takes an integer"):
        ParameterSet(descs(), {"n": b"seven"})


def test_parameter_files(tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"name": "n", "data": "4"}, {"name": "roi", "data": "[1, 2]"}]))
    assert load_parameter_file(p) == {"n": b"4", "roi": b"[1, 2]"}
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ParameterError, match="not valid JSON"):
        load_parameter_file(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('[{"nam": 1}]')
    with pytest.raises(ParameterError, match="entry 0"):
        load_parameter_file(wrong)
    pkl = tmp_path / "p.pkl"
    import pickle

    pkl.write_bytes(pickle.dumps([{"name": "n", "data": b"5"}]))
    with pytest.raises(ParameterError, match="--trust-pickle"):
        load_parameter_file(pkl)
    assert load_parameter_file(pkl, trust_pickle=True) == {"n": b"5"}
    import cbor2

    cb = tmp_path / "p.cbor"
    cb.write_bytes(cbor2.dumps([{"name": "mask", "data": b"\xff"}]))
    assert load_parameter_file(cb) == {"mask": b"\xff"}
