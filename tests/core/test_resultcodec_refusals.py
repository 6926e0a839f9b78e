"""What encode refuses to send, and which classes decode refuses to rebuild."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

from tango_dranspose.core.resultcodec import (
    TAG_DATACLASS,
    TAG_MODEL,
    ClassAllowList,
    ResultDecodeError,
    ResultEncodeError,
    allow_list_for,
    decode,
    encode,
)

from .resultcodec_samples import (
    ALLOWED,
    SAMPLES,
    Holder,
    Point,
    Summary,
    header,
    wire,
)

# ---------------------------------------------------------------------------------------------
# refusals at encode


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        ({"a": [1, 2, 3, Opaque()]}, "Opaque", "result['a'][3]"),
        ({"f": lambda: 1}, "function", "result['f']"),
        ([0, (1, (i for i in range(3)))], "generator", "result[1][1]"),
        ({"pts": [Point(1, 2), Holder([Point(1, 1)], np.zeros(1), {"x": print})]}, "builtin", ""),
        ({"s": {1, Opaque()}}, "Opaque", "result['s']<set element"),
        ({"k": {Opaque(): 1}}, "Opaque", "result['k']<key"),
        (Summary(name="n", spectrum=np.zeros(1), extra_thing=Opaque()), "Opaque", ".extra_thing"),
        ({"m": np.ma.masked_array([1, 2], mask=[False, True])}, "MaskedArray", "result['m']"),
        ({"d": dt.datetime.now().astimezone().tzinfo}, "timezone", "result['d']"),
    ],
)
def test_unknown_types_are_refused_with_their_path(value: Any, type_name: str, path: str) -> None:
    with pytest.raises(ResultEncodeError) as info:
        encode(value)
    message = str(info.value)
    assert type_name in message
    assert path in message


def test_dataclass_field_path() -> None:
    value = {"pts": [Point(1, 2), Holder([Point(1, 1)], np.zeros(1), {"x": print})]}
    with pytest.raises(ResultEncodeError, match=r"at result\['pts'\]\[1\]\.extra\['x'\]"):
        encode(value)


def test_open_file_is_refused() -> None:
    with open(__file__) as fh, pytest.raises(ResultEncodeError, match=r"TextIOWrapper at result"):
        encode({"a": [1, 2, 3, fh]})


def test_object_dtype_is_refused_at_encode() -> None:
    arr = np.array([1, "a", None], dtype=object)
    with pytest.raises(ResultEncodeError, match=r"result\['data'\]\[0\].*object"):
        encode({"data": [arr]})
    with pytest.raises(ResultEncodeError, match="object"):
        encode(np.zeros(2, dtype=[("a", "O"), ("b", "f8")]))


def test_local_classes_are_refused_at_encode() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(ResultEncodeError, match="module level"):
        encode(Local(1))


def test_self_containing_result_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ResultEncodeError, match="contains itself"):
        encode(loop)


# ---------------------------------------------------------------------------------------------
# refusals at decode


def test_class_outside_allow_list_is_refused() -> None:
    frames = wire(encode([Point(1, 2)]))
    with pytest.raises(ResultDecodeError, match=rf"{SAMPLES}:Point.*outside"):
        decode(frames, ClassAllowList(("someone_else.",)))


def test_allow_list_prefixes_match_whole_package_names() -> None:
    allowed = ClassAllowList(("pkg",))
    assert allowed.prefixes == ("pkg.",)
    assert allowed.allows("pkg") and allowed.allows("pkg.sub.mod")
    assert not allowed.allows("pkg_other") and not allowed.allows("other.pkg")
    with pytest.raises(ValueError):
        ClassAllowList(("",))
    lst = allow_list_for("beamline_x.payloads.roi:RoiWorker", "beamline_x.red:R", "solo:W")
    assert lst.prefixes == ("beamline_x.", "solo.", "tango_dranspose.")


@pytest.mark.parametrize("name", ["os:system", "posix:system", "builtins:eval", "subprocess:Popen"])
def test_functions_and_foreign_classes_are_refused(name: str) -> None:
    frames = [header(cbor2.CBORTag(TAG_DATACLASS, [name, {"command": "echo pwned"}]))]
    with pytest.raises(ResultDecodeError, match=name):
        decode(frames, ALLOWED)
    # Even when their package is allowed, they are not dataclasses / pydantic models.
    top = name.split(":")[0]
    with pytest.raises(ResultDecodeError, match="not a dataclass"):
        decode(frames, ClassAllowList((top,)))
    model = [header(cbor2.CBORTag(TAG_MODEL, [name, {}, None, []]))]
    with pytest.raises(ResultDecodeError, match="not a dataclass"):
        decode(model, ClassAllowList((top,)))


@pytest.mark.parametrize(
    "qualname", ["helper_function", "Point.__init__", "ARRAYS", "BaseModel", "Nope", "Point.x"]
)
def test_names_in_allowed_module_that_are_not_its_classes(qualname: str) -> None:
    frames = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{SAMPLES}:{qualname}", {}]))]
    with pytest.raises(ResultDecodeError, match="refusing to rebuild"):
        decode(frames, ALLOWED)


def test_model_tag_must_name_a_model_and_dataclass_tag_a_dataclass() -> None:
    as_model = [header(cbor2.CBORTag(TAG_MODEL, [f"{SAMPLES}:Point", {}, None, []]))]
    with pytest.raises(ResultDecodeError, match="not a pydantic model"):
        decode(as_model, ALLOWED)
    as_dc = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{SAMPLES}:Summary", {}]))]
    with pytest.raises(ResultDecodeError, match="not a dataclass"):
        decode(as_dc, ALLOWED)


def test_module_not_imported_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    pkg = tmp_path / "rc_sideeffect_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "evil.py").write_text(
        "import dataclasses, pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "@dataclasses.dataclass\nclass Thing:\n    x: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    frames = [header(cbor2.CBORTag(TAG_DATACLASS, ["rc_sideeffect_pkg.evil:Thing", {}]))]
    with pytest.raises(ResultDecodeError, match="not imported"):
        decode(frames, ClassAllowList(("rc_sideeffect_pkg.",)))
    assert not marker.exists()
    assert "rc_sideeffect_pkg.evil" not in sys.modules


def test_unknown_fields_and_failing_constructors_are_decode_errors() -> None:
    unknown = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{SAMPLES}:Point", {"x": 1, "z": 2}]))]
    with pytest.raises(ResultDecodeError, match="no fields"):
        decode(unknown, ALLOWED)
    missing = [header(cbor2.CBORTag(TAG_DATACLASS, [f"{SAMPLES}:Point", {"x": 1}]))]
    with pytest.raises(ResultDecodeError, match=r"rebuilding .*Point failed"):
        decode(missing, ALLOWED)
