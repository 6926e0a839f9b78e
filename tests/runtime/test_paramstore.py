from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from tango_dranspose.core.parameters import (
    FloatParameter,
    ParameterError,
    StrParameter,
    describe_model,
)
from tango_dranspose.runtime.paramstore import ParameterStore, json_type


def store() -> ParameterStore:
    s = ParameterStore()
    s.describe_from(
        [
            FloatParameter(name="scale", default=1.0).model_dump(mode="json"),
            StrParameter(name="label").model_dump(mode="json"),
        ]
    )
    return s


def test_versions_grow_only_when_values_change() -> None:
    s = store()
    first = s.current.number
    v = s.update({"scale": b"2"})
    assert v is not None and v.number == first + 1 and s.current is v
    assert s.update({"scale": b"2"}) is None  # the same value: no new version
    assert s.value_of("label") == b""  # default until set
    assert s.for_hash(v.hash) is v


def test_bad_values_are_refused_whole_with_the_parameter_named() -> None:
    s = store()
    before = s.current
    with pytest.raises(ParameterError, match="scale"):
        s.update({"label": b"ok", "scale": b"abc"})
    assert s.current is before and "label" not in s.values  # nothing applied
    with pytest.raises(ParameterError, match=r"no payload has a parameter 'roi'.*label, scale"):
        s.update({"roi": b"1"})
    assert s.update({"roi": b"1"}, allow_unknown=True) is not None  # arming keeps extras


def test_one_arm_parser_json_true_is_the_text_true() -> None:
    """Tango's Arm and the ZeroMQ client both go through ArmRequest: a JSON ``true`` becomes
    dranspose's ``b"True"`` (BoolParameter's rule), numbers their JSON text."""
    from tango_dranspose.core.parameters import BoolParameter
    from tango_dranspose.runtime.armrequest import arm_request, parse_arm_request

    text = '{"map": {"cam": [[]]}, "parameters": {"flag": true, "off": false, "n": 3, "s": "x"}}'
    for req in (parse_arm_request(text), arm_request(__import__("json").loads(text))):
        raw = req.parameter_bytes()
        assert raw == {"flag": b"True", "off": b"False", "n": b"3", "s": b"x"}
        assert BoolParameter(name="flag").from_bytes(raw["flag"]) is True


class Roi(BaseModel):
    x: int = 0
    y: int = 0


class ModelParameters(BaseModel):
    """A payload's ``parameter_class``: scalars, and fields carried as JSON text."""

    roi: tuple[int, int] = Field((0, 8), description="region of interest")
    box: Roi = Roi()
    threshold: float = 0.5
    enabled: bool = True


def model_store() -> ParameterStore:
    """The controller's view: only the descriptions the payloads announced, as dicts."""
    s = ParameterStore()
    s.describe_from([d.model_dump(mode="json") for d in describe_model(ModelParameters).values()])
    # A payload's own text parameter whose description happens to read like the note.
    note = StrParameter(name="note", description="a remark (JSON: no, just text)", default="-")
    s.describe_from([note.model_dump(mode="json")])
    return s


def test_json_parameters_are_known_by_the_description_a_model_field_gets() -> None:
    s = model_store()
    assert json_type(s.descriptions["roi"]) == "tuple[int, int]"
    assert json_type(s.descriptions["box"]) == "Roi"
    assert json_type(s.descriptions["note"]) is None  # no JSON default: the payload's prose
    assert json_type(s.descriptions["threshold"]) is None


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        # The probe of issue 13: accepted, memorized, then every event failed.
        ("roi", b"[1,2", r"parameter 'roi' takes JSON \(tuple\[int, int\]\), got b'\[1,2': "),
        ("box", b"{x: 1}", r"parameter 'box' takes JSON \(Roi\), got .*property name"),
        ("roi", b"[" * 100 + b"]" * 100, r"parameter 'roi' takes JSON .*nested more than"),
        ("threshold", b"abc", r"parameter 'threshold' takes a number, got b'abc'"),
        ("enabled", b"true", r"parameter 'enabled' takes True or False, got b'true'"),
        ("enabled", b"1", r"parameter 'enabled' takes True or False"),
    ],
)
def test_a_value_the_parameter_cannot_read_is_refused_and_not_kept(
    name: str, raw: bytes, reason: str
) -> None:
    s = model_store()
    s.update({"roi": b"[2, 5]"})
    before = s.current
    for arming in (False, True):  # a write, and an Arm (which also keeps undescribed names)
        with pytest.raises(ParameterError, match=reason):
            s.update({"note": b"changed", name: raw}, allow_unknown=arming)
        assert s.current is before  # no new version: nothing to send to the workers
        assert s.values == {"roi": b"[2, 5]"}  # nothing applied, not even the good value


def test_good_values_of_every_kind_are_kept() -> None:
    s = model_store()
    v = s.update(
        {
            "roi": b"[1, 2]",
            "box": b'{"x": 3, "y": 4}',
            "threshold": b"0.25",
            "enabled": b"False",
            "note": b"{not json, and fine",
        }
    )
    assert v is not None and v.values["box"] == b'{"x": 3, "y": 4}'
