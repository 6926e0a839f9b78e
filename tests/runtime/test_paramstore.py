from __future__ import annotations

import pytest

from tango_dranspose.core.parameters import FloatParameter, ParameterError, StrParameter
from tango_dranspose.runtime.paramstore import ParameterStore


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
