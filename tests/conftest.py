"""Shared fixtures: where the recorded beamline captures are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def captures_path() -> Path:
    return Path(os.environ.get("TANGO_DRANSPOSE_CAPTURES", REPO.parent / "shared" / "captures"))


@pytest.fixture(scope="session")
def captures() -> Path:
    """The captures directory; tests using it skip (saying why) when it is absent."""
    path = captures_path()
    if not path.is_dir():
        pytest.skip(
            f"recorded captures not found at {path} (set TANGO_DRANSPOSE_CAPTURES); "
            "the synthetic tests cover the same code"
        )
    return path
