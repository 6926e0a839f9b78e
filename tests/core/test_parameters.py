from __future__ import annotations

import enum
import json
import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from tango_dranspose.core.parameters import (
    BinaryParameter,
    BoolParameter,
    FloatParameter,
    IntParameter,
    ParameterError,
    ParameterSet,
    StrParameter,
    WorkParameter,
    describe,
    describe_model,
    load_parameter_file,
    model_from_parameters,
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


def test_work_parameters_built_as_dranspose_payload_tests_do() -> None:
    # dranspose's WorkParameter needs only name and data; value stays None until typed.
    p = WorkParameter(name="roi", data=b"[1, 2]")
    assert p.value is None and json.loads(p.data) == [1, 2]


class Mode(str, enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Roi(BaseModel):
    x: tuple[int, int] = (0, 10)


class Model(BaseModel):
    roi1: str = "bla"
    number: int = Field(3, description="how many")
    flow: float = 0.5
    isit: bool = False
    blob: bytes = b"\x00\x01"
    mode: Mode = Mode.FAST
    when: Literal["start", "end"] = "end"
    complex: tuple[int, int] | None = None
    crazy: dict[str, dict[int, str]] = {}
    roi: Roi = Roi()
    aliased: int = Field(1, alias="aliasName")


def test_model_fields_become_typed_parameters() -> None:
    d = describe_model(Model)
    assert {n: type(p).__name__ for n, p in d.items()} == {
        "roi1": "StrParameter",
        "number": "IntParameter",
        "flow": "FloatParameter",
        "isit": "BoolParameter",
        "blob": "BinaryParameter",
        "mode": "StrParameter",
        "when": "StrParameter",
        "complex": "StrParameter",
        "crazy": "StrParameter",
        "roi": "StrParameter",
        "aliasName": "IntParameter",
    }
    assert d["number"].description == "how many" and d["number"].default_value() == 3
    assert d["mode"].default_value() == "fast"  # an enum is set by its text, not as JSON
    assert d["complex"].description == "JSON: tuple[int, int] | None"
    assert d["roi"].default_value() == '{"x": [0, 10]}'
    # The descriptions travel between processes as plain parameter descriptions.
    assert describe([p.model_dump() for p in d.values()]) == d


def test_defaults_round_trip_to_the_models_defaults() -> None:
    built = model_from_parameters(Model, ParameterSet(describe_model(Model)).as_dict())
    assert built == Model()


def test_values_are_typed_by_the_model() -> None:
    raw = {
        "number": b"7",
        "isit": b"True",
        "blob": b"\xff",
        "mode": b"slow",
        "complex": b"[1, 2]",
        "crazy": b'{"a": {"1": "b"}}',
        "roi": b'{"x": [4, 5]}',
        "aliasName": b"9",
    }
    m = model_from_parameters(Model, ParameterSet(describe_model(Model), raw).as_dict())
    assert (m.number, m.isit, m.blob, m.mode) == (7, True, b"\xff", Mode.SLOW)
    assert m.complex == (1, 2) and m.crazy == {"a": {1: "b"}} and m.roi == Roi(x=(4, 5))
    assert m.aliased == 9
    # Fields with no value in the set keep the model's default.
    assert model_from_parameters(Model, {}).flow == 0.5


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"complex": b"[1, "}, "parameter 'complex' takes JSON"),
        ({"complex": b"[1, 2, 3]"}, "parameter 'complex': Tuple should have at most 2 items"),
        ({"when": b"middle"}, "parameter 'when': Input should be 'start' or 'end'"),
        ({"roi": b'{"x": ["a", 1]}'}, "parameter 'roi.x.0': Input should be a valid integer"),
    ],
)
def test_invalid_values_name_the_parameter(raw: dict[str, bytes], words: str) -> None:
    values = ParameterSet(describe_model(Model), raw).as_dict()
    with pytest.raises(ParameterError, match=re.escape(words)):
        model_from_parameters(Model, values)


def test_a_field_without_default_is_refused() -> None:
    class Required(BaseModel):
        threshold: float

    with pytest.raises(ParameterError, match=r"Required\.threshold has no default"):
        describe_model(Required)
