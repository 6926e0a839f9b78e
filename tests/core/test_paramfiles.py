"""Parameter files are told apart by content (JSON, CBOR, pickle); nesting is bounded."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
from pathlib import Path
from typing import Any

import cbor2
import pytest

from tango_dranspose.core.parameters import ParameterError, load_parameter_file
from tango_dranspose.core.paramfiles import (
    MAX_NESTING,
    NestingError,
    check_nesting,
    decode_parameter_blob,
    loads_json,
)

ITEMS = [{"name": "roi", "data": "[1, 2, 3, 4]"}, {"name": "mask", "data": b"\x00\xff"}]
EXPECTED = {"roi": b"[1, 2, 3, 4]", "mask": b"\x00\xff"}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_empty(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def load_error(path: Path, *, trust_pickle: bool = False) -> str:
    with pytest.raises(ParameterError) as err:
        load_parameter_file(path, trust_pickle=trust_pickle)
    text = str(err.value)
    assert "\n" not in text, "an error is one line"
    return text


@pytest.mark.parametrize("name", ["p.json", "p.cbor", "p.pkl", "params"])
def test_cbor_is_read_whatever_the_file_is_called(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, cbor2.dumps(ITEMS))
    assert decode_parameter_blob(path.read_bytes(), "x", trust_pickle=False)[0] == "cbor"
    assert load_parameter_file(path) == EXPECTED
    assert load_parameter_file(path, trust_pickle=True) == EXPECTED


@pytest.mark.parametrize("name", ["p.json", "p.cbor", "p.pkl"])
def test_json_is_read_whatever_the_file_is_called(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps([{"name": "n", "data": "4"}, {"name": "roi", "data": [1, 2]}]))
    assert load_parameter_file(path) == {"n": b"4", "roi": b"[1, 2]"}


def test_a_mapping_of_name_to_data_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"n": "4", "flag": True}))
    assert load_parameter_file(path) == {"n": b"4", "flag": b"true"}


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("name", ["p.pkl", "p.json", "p.cbor"])
def test_pickle_only_with_trust_and_it_says_how(tmp_path: Path, protocol: int, name: str) -> None:
    path = write(tmp_path / name, pickle.dumps(ITEMS, protocol=protocol))
    assert "--trust-pickle" in load_error(path)
    assert load_parameter_file(path, trust_pickle=True) == EXPECTED


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /nonexistent-dir/never",))


def test_a_trusted_pickle_is_still_restricted_to_plain_data(tmp_path: Path) -> None:
    path = write(tmp_path / "p.pkl", pickle.dumps([{"name": "x", "data": _Boom()}]))
    text = load_error(path, trust_pickle=True)
    assert "not a readable pickle of plain data" in text and "system" in text


def test_a_corrupt_trusted_pickle_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.pkl", b"\x80\x04\xff.")  # protocol 4, then no opcode
    assert "not a readable pickle" in load_error(path, trust_pickle=True)
    cut = write(tmp_path / "cut.pkl", pickle.dumps(ITEMS, protocol=4)[:-10])
    assert "not a readable pickle" in load_error(cut, trust_pickle=True)


def test_invalid_json_text_is_reported_as_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[{"name": "n", "data": "4"},\n {"name": ]')
    text = load_error(path)
    assert "not valid JSON" in text and "line 2" in text


def test_neither_format_names_all_three(tmp_path: Path) -> None:
    text = load_error(write(tmp_path / "p.bin", b"\xff\xfe\x00garbage"))
    assert "neither JSON" in text and "nor CBOR" in text and "nor a pickle" in text


def test_cbor_with_trailing_bytes_is_refused(tmp_path: Path) -> None:
    text = load_error(write(tmp_path / "p.cbor", cbor2.dumps(ITEMS) + b"\x01\x02"))
    assert "2 bytes after the first item" in text


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('"just text"', "expected a list"),
        ('[{"name": "n"}]', 'entry 0: needs "name" and "data"'),
        ('[{"name": 5, "data": "x"}]', "a parameter name must be text, got 5"),
    ],
)
def test_wrong_shape(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    assert words in load_error(path)


def test_data_that_has_no_text_form_is_refused(tmp_path: Path) -> None:
    when = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
    path = write(tmp_path / "p.cbor", cbor2.dumps([{"name": "t", "data": when}]))
    assert "the data of 't' is neither text, bytes nor a JSON value" in load_error(path)


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    assert "cannot read parameter file" in load_error(tmp_path / "missing.json")
    assert "cannot read parameter file" in load_error(tmp_path)


@pytest.mark.parametrize("depth", [MAX_NESTING, MAX_NESTING + 1, 100_000])
def test_json_nesting_is_bounded(tmp_path: Path, depth: int) -> None:
    # The list of entries and the entry are two levels; the value brings the rest.
    inner = depth - 2
    path = tmp_path / "p.json"
    path.write_text('[{"name": "deep", "data": ' + "[" * inner + "]" * inner + "}]")
    if depth <= MAX_NESTING:
        assert load_parameter_file(path)["deep"] == json.dumps(nested_empty(inner)).encode()
    else:
        assert f"the JSON is nested more than {MAX_NESTING} levels deep" in load_error(path)


def test_cbor_and_pickle_nesting_is_bounded(tmp_path: Path) -> None:
    deep = [{"name": "deep", "data": nested(MAX_NESTING)}]
    cbor_path = write(tmp_path / "p.cbor", cbor2.dumps(deep))
    assert "the CBOR is nested more than" in load_error(cbor_path)
    pickle_path = write(tmp_path / "p.pkl", pickle.dumps(deep))
    text = load_error(pickle_path, trust_pickle=True)
    assert "more than" in text and "deep" in text  # refused by safepickle or by us


def test_check_nesting_ends_on_a_self_referencing_list() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(NestingError):
        check_nesting(loop)
    check_nesting(nested(MAX_NESTING))
    check_nesting("scalars have no depth")


def test_loads_json_turns_recursion_into_its_own_error() -> None:
    with pytest.raises(NestingError, match="nested more than 64"):
        loads_json("{" + '"a": {' * 200_000 + "}" * 200_001)
    with pytest.raises(NestingError):
        loads_json(b"[" * 65 + b"]" * 65)
    assert loads_json(b"[" * 64 + b"]" * 64) == nested_empty(64)
