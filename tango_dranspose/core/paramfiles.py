"""Files a user hands us: parameter files told apart by content, JSON with bounded nesting.

dranspose reads a replay parameter file by trying JSON, then pickle, then CBOR, whatever the
file is called; so do we, except that pickle content is read only when the user trusts it,
and then through :mod:`tango_dranspose.core.safepickle` (plain data only). The content is
``[{"name": ..., "data": ...}]`` (``data`` text, bytes, or any JSON value, which is passed on as
its JSON text); a ``{name: data}`` mapping is accepted too.

Decoded values are walked and copied by code that recurses (``json.dumps``, pydantic, the
encoders of the wire formats), so nesting is capped where files are read: a deeply nested
file is refused with one line instead of a ``RecursionError`` somewhere later.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import cbor2

from tango_dranspose.core.parameters import ParameterError

# Real maps need 7 levels (map, parts, part, stream, cell, virtual worker, tags) and parameter
# values a few; 64 leaves room and keeps every later recursive walk far from Python's limit.
MAX_NESTING = 64

FileFormat = Literal["json", "cbor", "pickle"]


class NestingError(ValueError):
    """A decoded value is nested more deeply than :data:`MAX_NESTING`."""


def check_nesting(obj: Any, limit: int = MAX_NESTING) -> None:
    """Raise :class:`NestingError` if containers in ``obj`` nest more than ``limit`` deep.

    Walks level by level with a list, not by recursion, and stops at the limit, so it also
    ends on self-referencing containers (which a pickle can build).
    """
    level = [obj] if isinstance(obj, dict | list | tuple) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise NestingError(f"nested more than {limit} levels deep")
        below: list[Any] = []
        for container in level:
            values = container.values() if isinstance(container, dict) else container
            below.extend(v for v in values if isinstance(v, dict | list | tuple))
        level = below


def loads_json(text: str | bytes, *, limit: int = MAX_NESTING) -> Any:
    """``json.loads`` that refuses nesting deeper than ``limit`` with :class:`NestingError`.

    Raises ``ValueError`` subclasses only: ``json.JSONDecodeError``, ``UnicodeDecodeError``,
    :class:`NestingError`.
    """
    try:
        obj = json.loads(text)
    except RecursionError:
        # Python's JSON decoder recurses per level; far beyond the limit it runs out of stack.
        raise NestingError(f"nested more than {limit} levels deep") from None
    check_nesting(obj, limit)
    return obj


def _looks_like_pickle(blob: bytes) -> bool:
    # Protocol 2 and later start with PROTO and the version; protocols 0 and 1 (still written
    # by old installations) start with an opcode that builds a container and end with STOP.
    if len(blob) >= 2 and blob[0] == 0x80 and 2 <= blob[1] <= 5:
        return True
    return blob[-1:] == b"." and blob[:1] in (b"(", b"]", b"}", b")")


def _looks_like_json_text(blob: bytes) -> bool:
    return blob.lstrip()[:1] in (b"[", b"{")


def decode_parameter_blob(blob: bytes, where: str, *, trust_pickle: bool) -> tuple[FileFormat, Any]:
    """The file's format and decoded content; :class:`ParameterError` (one line) if neither."""
    json_error: str | None = None
    try:
        return "json", loads_json(blob)
    except NestingError as exc:
        raise ParameterError(f"{where}: the JSON is {exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        json_error = str(exc)
    if _looks_like_pickle(blob):
        if not trust_pickle:
            raise ParameterError(
                f"{where} holds a pickle; loading it can run code. Pass --trust-pickle if you "
                "trust where it comes from, or convert it to JSON"
            )
        from tango_dranspose.core.safepickle import restricted_loads

        try:
            obj = restricted_loads(blob)
        except Exception as exc:
            # A corrupt pickle fails in many ways (bad opcodes, memo, argument types), and a
            # refused global is an UnpicklingError too: each is one line for the user.
            raise ParameterError(
                f"{where}: not a readable pickle of plain data: {str(exc) or type(exc).__name__}"
            ) from None
        try:
            check_nesting(obj)
        except NestingError as exc:
            raise ParameterError(f"{where}: the pickle is {exc}") from None
        return "pickle", obj
    try:
        view = io.BytesIO(blob)
        obj = cbor2.CBORDecoder(view).decode()
        if view.tell() != len(blob):
            raise ValueError(f"{len(blob) - view.tell()} bytes after the first item")
    except Exception as exc:
        # cbor2 raises its own errors, and ValueError/TypeError from semantic tags.
        if _looks_like_json_text(blob):
            raise ParameterError(f"{where}: not valid JSON: {json_error}") from None
        raise ParameterError(
            f"{where}: neither JSON ({json_error}) nor CBOR "
            f"({str(exc) or type(exc).__name__}) nor a pickle"
        ) from None
    try:
        check_nesting(obj)
    except NestingError as exc:
        raise ParameterError(f"{where}: the CBOR is {exc}") from None
    return "cbor", obj


def _entries(items: Any, where: str) -> list[tuple[Any, Any]]:
    if isinstance(items, Mapping):
        return list(items.items())
    if not isinstance(items, list | tuple):
        raise ParameterError(
            f'{where}: expected a list of {{"name": ..., "data": ...}} entries, '
            f"got {type(items).__name__}"
        )
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "name" not in item or "data" not in item:
            shown = repr(item)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise ParameterError(f'{where} entry {i}: needs "name" and "data", got {shown}')
        out.append((item["name"], item["data"]))
    return out


def read_parameter_file(path: str | Path, *, trust_pickle: bool = False) -> dict[str, bytes]:
    """Parameter name -> raw bytes, from a JSON, CBOR or (trusted only) pickle file.

    The format is told by content, not by the file name. Every problem is a
    :class:`ParameterError` of one line naming the file.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read parameter file {path}: {exc.strerror or exc}") from None
    where = f"parameter file {path}"
    fmt, items = decode_parameter_blob(blob, where, trust_pickle=trust_pickle)
    out: dict[str, bytes] = {}
    for name, data in _entries(items, f"{where}, read as {fmt},"):
        if not isinstance(name, str):
            raise ParameterError(f"{where}: a parameter name must be text, got {name!r}")
        if isinstance(data, str):
            out[name] = data.encode()
        elif isinstance(data, bytes | bytearray):
            out[name] = bytes(data)
        else:
            try:
                out[name] = json.dumps(data).encode()
            except (TypeError, ValueError) as exc:
                raise ParameterError(
                    f"{where}: the data of {name!r} is neither text, bytes nor a JSON value ({exc})"
                ) from None
    return out
