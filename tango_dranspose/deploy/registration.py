"""Registering a deployment from a dsconfig JSON file (the format facilities keep in git).

dsconfig's ``json2tango`` computes the difference between the file and the Tango DB, prints it,
and writes it with ``-w``. Its exit status is 0 (nothing to change), 2 (changes written),
3 (changes found, not written: a dry run) or 1 (error); this module turns that into a result
instead of letting a 2 or 3 look like a failure.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tango_dranspose.deploy.database import _bin

NO_CHANGES, ERROR, APPLIED, NOT_APPLIED = 0, 1, 2, 3


class RegistrationError(RuntimeError):
    """dsconfig could not compare or write the configuration (e.g. the DB is unreachable)."""


class BadConfigFile(RegistrationError):
    """The file cannot be read or is not a dsconfig file."""


@dataclass
class Registration:
    changed: bool
    applied: bool
    diff: str


def load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise BadConfigFile(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise BadConfigFile(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("servers"), dict):
        raise BadConfigFile(
            f'{path} is not a dsconfig file: it needs a "servers" object '
            '({"servers": {SERVER: {INSTANCE: {CLASS: {DEVICE: {"properties": ...}}}}}})'
        )
    return config


def servers(config: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(server, instance, devices) of every server instance in a dsconfig file."""
    out = []
    for server, instances in config["servers"].items():
        for instance, classes in instances.items():
            devices = [d for devs in classes.values() for d in devs]
            out.append((server, instance, sorted(devices)))
    return out


def register(
    path: Path,
    tango_host: str,
    *,
    apply: bool = True,
    update: bool = False,
    colors: bool = False,
) -> Registration:
    """Show the difference between ``path`` and the DB; write it unless ``apply`` is false.

    ``update`` only adds and changes (dsconfig ``-u``); without it, properties of these
    servers' devices that the file does not name are removed, as dsconfig does.
    """
    load_config(path)
    argv = [
        _bin("json2tango"),
        *(["-w"] if apply else []),
        *(["-u"] if update else []),
        *([] if colors else ["--no-colors"]),
        str(path),
    ]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**_env(), "TANGO_HOST": tango_host},
            timeout=120,
        )
    except FileNotFoundError:
        raise RegistrationError("json2tango is not installed (pip package dsconfig)") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == NO_CHANGES:
        return Registration(False, False, output)
    if proc.returncode == APPLIED:
        return Registration(True, True, output)
    if proc.returncode == NOT_APPLIED:
        return Registration(True, False, output)
    raise RegistrationError(
        f"dsconfig could not register {path} in the Tango DB at {tango_host} "
        f"(status {proc.returncode}): {_gist(output)}"
    )


def _gist(output: str) -> str:
    """The readable part of dsconfig's output: Tango error descriptions, else its last line."""
    descs = re.findall(r"desc = (.+)", output)
    if descs:
        return "; ".join(dict.fromkeys(d.strip() for d in descs))
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
