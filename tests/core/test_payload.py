from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tango_dranspose.core.events import EventData
from tango_dranspose.core.payload import PayloadError, WorkerPayload, describe_class, load_class


def write_pkg(root: Path, name: str, body: str) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(textwrap.dedent(body))


def test_load_from_search_path_without_touching_sys_path(tmp_path: Path) -> None:
    write_pkg(
        tmp_path,
        "tdp_payload_a",
        """
        class W:
            def __init__(self, *args, **kwargs):
                self.kwargs = kwargs
            def process_event(self, event, parameters=None, *args, **kwargs):
                return (event.event_number, args)
        """,
    )
    before = list(sys.path)
    cls = load_class("tdp_payload_a.mod:W", [tmp_path])
    assert sys.path == before
    w = WorkerPayload(cls, parameters={}, context={"x": 1})
    assert w.instance.kwargs["context"] == {"x": 1}
    assert w.process_event(EventData(4, {}), {}, True) == (4, (True,))


def test_old_style_signatures(tmp_path: Path) -> None:
    write_pkg(
        tmp_path,
        "tdp_payload_b",
        """
        class W:
            def __init__(self):
                pass
            def process_event(self, event):
                return event.event_number * 2
        """,
    )
    w = WorkerPayload(load_class("tdp_payload_b.mod:W", [tmp_path]), parameters={}, context={})
    assert w.process_event(EventData(5, {}), {}, False) == 10


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nocolon", "package.module:ClassName"),
        ("tdp_missing_mod:X", "cannot import 'tdp_missing_mod'"),
        ("json:NoSuchClass", "has no 'NoSuchClass'"),
        ("json:dumps", "is not a class"),
    ],
)
def test_clear_errors(spec: str, words: str) -> None:
    with pytest.raises(PayloadError, match=words):
        load_class(spec)


def test_import_error_inside_payload_is_reported(tmp_path: Path) -> None:
    write_pkg(tmp_path, "tdp_payload_c", "import tdp_not_installed_anywhere\n")
    with pytest.raises(PayloadError, match="tdp_not_installed_anywhere"):
        load_class("tdp_payload_c.mod:W", [tmp_path])


def test_describe_parameters_accepts_dicts() -> None:
    class P:
        @staticmethod
        def describe_parameters():
            return [{"name": "a", "dtype": "int", "default": 2}]

    assert describe_class(P)["a"].default_value() == 2
