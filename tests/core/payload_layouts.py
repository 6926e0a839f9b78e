"""Payload repositories laid out as beamlines keep them, and import isolation for tests.

A dranspose payload repository is a git checkout with ``src/worker.py`` and ``src/reducer.py``
and no ``__init__.py`` (``src`` is a namespace package), data files beside them, run from its
root. Every such repository names its package ``src``, so tests that load several of them in
one process undo each load afterwards (:func:`fresh_imports`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

from tango_dranspose.core import payload


def write_repo(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``{relative path: text or bytes}`` under ``root`` (text is dedented)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    # The import system caches directory listings; a file written within the same mtime tick
    # as an earlier listing would be missed.
    importlib.invalidate_caches()
    return root


def port(source: str) -> str:
    """A dranspose payload ported as the README says: ``dranspose.`` in import lines only."""
    return "\n".join(
        line.replace("dranspose.", "tango_dranspose.compat.")
        if line.lstrip().startswith(("from dranspose.", "import dranspose."))
        else line
        for line in textwrap.dedent(source).splitlines()
    )


def git_repo(root: Path, tag: str | None = None) -> bool:
    """Make ``root`` a git repository with one commit (and a tag); False without git."""
    git = shutil.which("git")
    if git is None:
        return False
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }

    def run(*args: str) -> None:
        subprocess.run([git, "-C", str(root), *args], check=True, capture_output=True, env=env)

    run("init", "-q")
    run("add", "-A")
    run("commit", "-q", "-m", "payload")
    if tag:
        run("tag", tag)
    payload.git_describe.cache_clear()
    return True


@contextlib.contextmanager
def fresh_imports() -> Iterator[None]:
    """Undo the payload packages loaded inside: their modules, ``sys.path`` entries and
    registrations, and any ``chdir``.

    Only payload packages are forgotten: dropping a library module imported meanwhile (ours,
    numpy's) would give the next import a second copy of its classes, and isinstance checks
    between the copies fail.
    """
    path = list(sys.path)
    modules = set(sys.modules)
    loaded = dict(payload._LOADED_FROM)
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        payloads = set(payload._LOADED_FROM) - set(loaded)
        for name in set(sys.modules) - modules:
            if name.partition(".")[0] in payloads:
                del sys.modules[name]
        payload._LOADED_FROM.clear()
        payload._LOADED_FROM.update(loaded)
        payload.git_describe.cache_clear()
        importlib.invalidate_caches()
