"""Mistakes on the command line give one readable line and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tango_dranspose.cli import main


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            [
                "serve",
                "ingester",
                "--name",
                "i",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--stream",
                "oops",
            ],
            "write it as NAME:PROTOCOL=URL",
        ),
        (
            [
                "serve",
                "ingester",
                "--name",
                "i",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--stream",
                "cam:NOPE=pull+tcp://127.0.0.1:1",
            ],
            "unknown protocol 'NOPE'",
        ),
        (
            [
                "serve",
                "worker",
                "--name",
                "w",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--worker-class",
                "no_such_pkg.mod:W",
            ],
            "cannot import 'no_such_pkg.mod'",
        ),
        (
            ["scan", "--client", "tcp://127.0.0.1:1", "--map", "/no/such/map.json"],
            "cannot read the trigger map",
        ),
        (["inspect", "/no/such/file.cbors"], "no such capture file"),
    ],
)
def test_one_clear_line(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_bad_raw_capture_protocol_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tango_dranspose.core.capture import write_raw_capture

    path = tmp_path / "x.cbors"
    write_raw_capture(path, [[b"{}"]])
    assert main(["inspect", f"s:NOPE={path}"]) == 2
    assert "unknown protocol 'NOPE'" in capsys.readouterr().err
