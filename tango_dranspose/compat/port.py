"""``tango-dranspose port DIR``: port a dranspose payload repository by rewriting its imports.

Every ``.py`` file under DIR has its ``dranspose`` imports pointed at ``tango_dranspose.compat``
(``from dranspose.event import EventData`` becomes ``from tango_dranspose.compat.event import
EventData``; after a bare ``import dranspose.x``, the uses ``dranspose.x.Y`` are rewritten too,
since the import then binds another name). Only import statements and those uses change, located
through the syntax tree, so comments, strings and formatting stay as they are.

What cannot be ported this way is reported, one line each (``path:line: what and why``):
dranspose modules or names that ``tango_dranspose.compat`` does not provide (its internals:
worker, reducer, ingesters, controller, helpers, ...), Redis and HTTP plumbing (``redis``,
``fastapi``, ``uvicorn``, ``h5pyd``, ``redis://`` URLs, dranspose's ``/api/v1/`` endpoints), a
dependency on the ``dranspose`` package (``pyproject.toml``, ``setup.cfg``, ``setup.py``,
``requirements*.txt``), and files that do not parse. An import of an unprovided module is left
as it was, so that what is left to do stays visible in the code.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

OLD = "dranspose"
NEW = "tango_dranspose.compat"

# Directories that hold no code of the payload's own.
SKIP_DIRS = frozenset(
    {"__pycache__", "build", "dist", "node_modules", "site-packages", "venv", "env"}
)
DEPENDENCY_FILES = re.compile(r"^(pyproject\.toml|setup\.cfg|requirements.*\.txt)$")

_INTERNAL = "a dranspose internal"
_RUNTIME = "here it is a Tango device server that runs your classes (docs/tango-deployment.md)"
_INGEST = (
    "here ingesters are DransposeIngester device servers speaking one of the built-in "
    "protocols (tango-dranspose protocols); a custom ingester needs a new protocol module"
)
# Why a dranspose module has no counterpart, by its name below ``dranspose.``.
MODULE_HINTS = {
    "worker": f"{_INTERNAL} (the worker process); {_RUNTIME}",
    "reducer": f"{_INTERNAL} (the reducer process); {_RUNTIME}",
    "ingester": f"{_INTERNAL} (the ingester base); {_INGEST}",
    "ingesters": f"{_INTERNAL} (the ingesters); {_INGEST}",
    "controller": f"{_INTERNAL} (the HTTP controller); here the DransposeController device",
    "distributed": f"{_INTERNAL} (Redis state sharing); the control plane here is Tango",
    "debug_worker": f"{_INTERNAL}; here a worker tagged debug (README: debug workers)",
    "replay": "run replays with 'tango-dranspose replay' (docs/capture-files.md)",
    "cli": "use the 'tango-dranspose' command",
    "mapping": f"{_INTERNAL}; trigger maps are JSON here (docs/trigger-maps.md)",
    "helpers": f"{_INTERNAL} (HTTP/HDF5 helpers); the publish tree becomes Tango attributes "
    "and the HDF5 result file",
    "workload_generator": f"{_INTERNAL}; simulate detectors with 'tango-dranspose simulate'",
}
# Methods of dranspose's classes that ours do not have, by attribute name.
ATTRIBUTE_HINTS = {
    "to_stream_data": "dranspose's message models build their frames; here build them with "
    "the build_* functions of tango_dranspose.streams.<protocol>",
}
NAME_HINTS = {
    "RedisKeys": "dranspose's Redis key layout; no Redis here (Tango is the control plane)",
}
# Third-party packages of dranspose's plumbing, which a ported payload no longer talks to.
PLUMBING = {
    "redis": "Redis, dranspose's control plane; here the control plane is Tango",
    "aioredis": "Redis, dranspose's control plane; here the control plane is Tango",
    "fastapi": "an HTTP server; results are published as Tango attributes here",
    "uvicorn": "an HTTP server; results are published as Tango attributes here",
    "starlette": "an HTTP server; results are published as Tango attributes here",
    "h5pyd": "dranspose's HDF5-REST results; read the reducer's Tango attributes or result file",
}
_HTTP_API = re.compile(r"/api/v1/")
_REDIS = re.compile(r"^redis://|^REDIS_[A-Z_]*$")
# A requirement on dranspose: a quoted PEP 508 string (pyproject lists, setup.py), a line of
# its own (requirements files, setup.cfg), or a Poetry table entry with a version.
_REQUIREMENT = re.compile(
    r"""["']dranspose\s*(?:\[[^\]]*\])?\s*(?:[<>=!~;@]|["'])"""
    r"""|^\s*dranspose\s*(?:\[[^\]]*\])?\s*(?:[<>!~;@]|==|$)"""
    r"""|^\s*dranspose\s*=\s*(?:["'][\^~<>=*\d]|\{)"""
)


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class FilePort:
    path: Path
    original: str
    ported: str
    imports: int = 0  # import statements rewritten
    problems: list[Problem] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.ported != self.original

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.original.splitlines(keepends=True),
                self.ported.splitlines(keepends=True),
                fromfile=f"a/{self.path}",
                tofile=f"b/{self.path}",
            )
        )


@dataclass
class PortReport:
    files: list[FilePort] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # of every file, in order

    @property
    def changed(self) -> list[FilePort]:
        return [f for f in self.files if f.changed]

    @property
    def ok(self) -> bool:
        return not self.problems


def _compat_module(rest: str) -> bool:
    """Whether ``tango_dranspose.compat.<rest>`` exists (``rest`` empty: the package)."""
    name = f"{NEW}.{rest}" if rest else NEW
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _compat_has(rest: str, name: str) -> bool:
    module = f"{NEW}.{rest}" if rest else NEW
    if _compat_module(f"{rest}.{name}" if rest else name):
        return True
    return hasattr(importlib.import_module(module), name)


def _missing_module(dotted: str) -> str:
    """Why ``dranspose.<...>`` (``dotted``) is not provided."""
    rest = dotted.split(".", 1)[1] if "." in dotted else ""
    hint = MODULE_HINTS.get(rest.split(".")[0])
    text = f"{dotted} is not provided by {NEW}"
    return f"{text}: {hint}" if hint else text


class _Source:
    """One file's text with positions converted between the syntax tree (UTF-8 byte columns)
    and the text (character columns)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)

    def char_col(self, lineno: int, byte_col: int) -> int:
        return len(self.lines[lineno - 1].encode()[:byte_col].decode())

    def at(self, lineno: int, col: int, length: int) -> str:
        return self.lines[lineno - 1][col : col + length]


def _module_tokens(text: str) -> dict[tuple[int, int], tuple[int, int]]:
    """For each ``from`` keyword (row, col): the position of the name right after it."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    previous_from: tuple[int, int] | None = None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.NL, tokenize.COMMENT):
            continue
        if previous_from is not None:
            out[previous_from] = tok.start
            previous_from = None
        if tok.type == tokenize.NAME and tok.string == "from":
            previous_from = tok.start
    return out


def _usage_problems(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Uses of dranspose's plumbing or of methods we do not provide, found in the code."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ATTRIBUTE_HINTS:
            yield node.lineno, f".{node.attr}() is not provided: {ATTRIBUTE_HINTS[node.attr]}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = repr(node.value.strip()[:60])
            if _HTTP_API.search(node.value):
                why = "set parameters and read results through the Tango devices here"
                yield node.lineno, f"calls dranspose's HTTP API ({text}); {why}"
            elif _REDIS.search(node.value):
                why = "there is no Redis here (Tango is the control plane)"
                yield node.lineno, f"uses Redis ({text}); {why}"


def port_source(text: str, path: Path) -> FilePort:
    """``text`` (the content of ``path``) with its dranspose imports ported."""
    result = FilePort(path, text, text)
    try:
        tree = ast.parse(text, filename=str(path))
        from_names = _module_tokens(text)
    except (SyntaxError, ValueError, tokenize.TokenError) as exc:
        line = getattr(exc, "lineno", None) or 1
        result.problems.append(Problem(path, line, f"cannot parse it ({exc.__class__.__name__})"))
        return result
    src = _Source(text)
    edits: list[tuple[int, int]] = []  # (line, char col) where "dranspose" becomes NEW
    bare = False  # an unaliased "import dranspose[.x]" binds the name dranspose

    def problem(line: int, message: str) -> None:
        result.problems.append(Problem(path, line, message))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            ported = False
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in PLUMBING:
                    problem(node.lineno, f"imports {alias.name}: {PLUMBING[root]}")
                if root != OLD:
                    continue
                rest = alias.name.partition(".")[2]
                if not _compat_module(rest):
                    problem(node.lineno, _missing_module(alias.name))
                    continue
                edits.append((alias.lineno, src.char_col(alias.lineno, alias.col_offset)))
                bare = bare or alias.asname is None
                ported = True
            result.imports += ported
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root in PLUMBING:
                problem(node.lineno, f"imports from {node.module}: {PLUMBING[root]}")
            if root != OLD:
                continue
            rest = node.module.partition(".")[2]
            if not _compat_module(rest):
                problem(node.lineno, _missing_module(node.module))
                continue
            for alias in node.names:
                if alias.name != "*" and not _compat_has(rest, alias.name):
                    hint = NAME_HINTS.get(alias.name)
                    problem(
                        node.lineno,
                        f"{node.module} has no {alias.name} in {NEW}"
                        + (f": {hint}" if hint else ""),
                    )
            start = (node.lineno, src.char_col(node.lineno, node.col_offset))
            position = from_names.get(start)
            if position is None:
                problem(node.lineno, "cannot locate the module name of this import")
                continue
            edits.append(position)
            result.imports += 1
    if bare:
        # "import dranspose.x" bound the name dranspose; it now binds tango_dranspose.
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == OLD and isinstance(node.ctx, ast.Load):
                edits.append((node.lineno, src.char_col(node.lineno, node.col_offset)))
    uses: dict[str, list[int]] = {}
    for line, message in _usage_problems(tree):
        uses.setdefault(message, []).append(line)
    for message, where in uses.items():  # one line per kind of use, not one per occurrence
        more = f" (and {len(where) - 1} more use(s) in this file)" if len(where) > 1 else ""
        problem(min(where), message + more)

    lines = list(src.lines)
    for lineno, col in sorted(set(edits), reverse=True):
        if src.at(lineno, col, len(OLD)) != OLD:
            problem(lineno, f"cannot rewrite this use of {OLD} (unexpected position)")
            continue
        text_line = lines[lineno - 1]
        lines[lineno - 1] = text_line[:col] + NEW + text_line[col + len(OLD) :]
    ported_text = "".join(lines)
    try:
        ast.parse(ported_text)
    except SyntaxError as exc:  # never write a file we broke
        problem(exc.lineno or 1, f"rewriting the imports broke the file ({exc.msg}); left as is")
        return result
    result.ported = ported_text
    result.problems.sort(key=lambda p: p.line)
    return result


def _dependency_problems(path: Path, text: str) -> Iterator[Problem]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        if _REQUIREMENT.search(code) and not re.match(r"\s*name\s*=", code):
            yield Problem(path, lineno, "depends on dranspose: depend on tango-dranspose instead")


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.iterdir()):
        if path.is_dir():
            if path.name.startswith(".") or path.name in SKIP_DIRS:
                continue
            yield from _walk(path)
        elif path.is_file():
            yield path


def port_tree(root: Path) -> PortReport:
    """Port every ``.py`` file under ``root`` (nothing is written; see :func:`write`)."""
    report = PortReport()
    for path in _walk(root):
        shown = path.relative_to(root)
        if path.suffix == ".py":
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                report.problems.append(Problem(shown, 1, "not UTF-8 text; port it by hand"))
                continue
            port = port_source(text, shown)
            report.files.append(port)
            report.problems += port.problems
            if path.name == "setup.py":
                report.problems += _dependency_problems(shown, text)
        elif DEPENDENCY_FILES.match(path.name):
            text = path.read_text(encoding="utf-8", errors="replace")
            report.problems += _dependency_problems(shown, text)
    return report


def write(report: PortReport, root: Path) -> None:
    """Write the ported files in place (bytes as read, line endings kept)."""
    for port in report.changed:
        (root / port.path).write_bytes(port.ported.encode("utf-8"))
