"""Loading and calling user payloads (worker and reducer classes) as dranspose does.

Finding the class (docs/decisions/0014-payloads-import-like-python.md): ``"package.module:Class"``
is looked up as Python would with the search directories (``--payload-path``, the
``PayloadPath`` property) and then the working directory as ``sys.path`` entries, namespace
packages (a repository's ``src/`` without ``__init__.py``) included. A package found there is
taken from there even when an installed package has the same name (as ``PYTHONPATH`` would),
and its directory is appended to ``sys.path`` so that the payload's own later imports work as
under ``python``; otherwise the module is imported normally (installed packages). A process
holds one package of a name: loading ``src`` from a second, different directory is refused
rather than silently reusing the first.

Calling: dranspose 0.1 and 0.2 payloads (and the ``parameter_class`` of its newest branch) are
called with the arguments their methods take, worked out once per instance from the signatures.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tango_dranspose.core.events import EventData, ResultData
from tango_dranspose.core.parameters import (
    ParameterBase,
    ParameterError,
    WorkParameter,
    describe,
    describe_model,
    is_parameter_model,
    model_from_parameters,
)
from tango_dranspose.core.states import ComponentState, ReducerState, WorkerState

# The dranspose release whose payload API this suite implements (0.1.x payloads too, and the
# parameter_class of its newest branch); payloads see it as ``state.dranspose_version``.
DRANSPOSE_VERSION = "0.2.0"


class PayloadError(RuntimeError):
    """A payload class that cannot be found, loaded or constructed."""


# ---------------------------------------------------------------------------------------------
# Finding payload classes

# Top-level package name -> the search directories it was loaded from by load_class.
_LOADED_FROM: dict[str, tuple[Path, ...]] = {}
_LOCK = threading.RLock()


def search_dirs(search: Sequence[str | Path] = ()) -> list[Path]:
    """The directories looked in, in order: the given ones (absolute), then the working one.

    Relative entries are resolved against the working directory now, so ``--payload-path .``
    keeps meaning the same directory later. The working directory comes last, as dranspose
    always imports from it.
    """
    out: list[Path] = []
    for entry in [*search, Path.cwd()]:
        path = Path(os.path.expanduser(os.fspath(entry))).resolve()
        if path not in out:
            out.append(path)
    return out


def _listing(path: Path, limit: int = 8) -> str:
    try:
        names = sorted(
            p.name + ("/" if p.is_dir() else "")
            for p in path.iterdir()
            if not p.name.startswith((".", "__pycache__"))
        )
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "it has " + ", ".join(names[:limit]) + more


def _what_is_there(module: str, root: Path) -> str:
    """Why ``module`` is not in ``root``, in the words of a directory listing."""
    if not root.exists():
        return f"{root}: no such directory"
    if not root.is_dir():
        return f"{root}: not a directory"
    parts = module.split(".")
    here, found = root, f"{root}: "
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last and (here / f"{part}.py").exists():
            return f"{here / part}.py is there"
        if not (here / part).is_dir():
            want = f"{part}.py" if last else f"{part}/"
            return f"{found}no {want} in it ({_listing(here)})"
        here = here / part
        kind = "package" if (here / "__init__.py").exists() else "namespace package"
        found = f"{root}: found {here}/ ({kind}) but "
    return f"{here}/ is there"


def _holders(spec: importlib.machinery.ModuleSpec, dirs: Sequence[Path]) -> tuple[Path, ...]:
    """The search directories that hold (a portion of) the top-level package of ``spec``."""
    places = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not places and spec.origin:
        places = [Path(spec.origin)]
    return tuple(d for d in dirs if any(p.parent == d for p in places))


def _module_places(mod: Any) -> list[Path]:
    paths = list(getattr(mod, "__path__", None) or [])
    if not paths and getattr(mod, "__file__", None):
        paths = [mod.__file__]
    # Resolved as the search directories are (a symlinked checkout, /tmp on some systems).
    return [Path(p).resolve() for p in paths]


def _import(module: str, dirs: list[Path]) -> Any:
    top = module.partition(".")[0]
    with _LOCK:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(d) for d in dirs])
        if spec is None:
            return importlib.import_module(module)  # installed, or elsewhere on sys.path
        holders = _holders(spec, dirs)
        before = _LOADED_FROM.get(top)
        if before is not None and not set(before) & set(holders):
            raise PayloadError(
                f"{top!r} is already loaded from {', '.join(map(str, before))}; a process holds "
                f"one package of a name, so {top!r} in {', '.join(map(str, holders))} cannot be "
                "loaded too (run it in its own process, or give the packages distinct names)"
            )
        existing = sys.modules.get(top)
        if existing is not None and before is None:
            # Imported before, not by load_class (an installed package, the test suite's own
            # package): Python reuses it, so do we; remember its root if it is this one.
            if any(d in p.parents for p in _module_places(existing) for d in holders):
                _LOADED_FROM[top] = holders
            return importlib.import_module(module)
        added_path = [str(d) for d in holders if str(d) not in sys.path]
        modules_before = set(sys.modules)
        fresh = top not in sys.modules
        if fresh:
            # Taken from the search directory even when an installed package has the same name
            # (as PYTHONPATH would); a namespace spec has no loader and nothing to execute.
            mod = importlib.util.module_from_spec(spec)
            sys.modules[top] = mod
        # Appended, not prepended: the payload's own later imports (siblings, deferred imports,
        # unpickling by reference) find its directory without shadowing installed packages.
        sys.path.extend(added_path)
        try:
            if fresh and spec.loader is not None:
                spec.loader.exec_module(mod)
            _LOADED_FROM[top] = holders
            loaded = importlib.import_module(module)
        except BaseException:
            if fresh:
                # Leave nothing half-loaded: a corrected payload (or another directory) can be
                # loaded by the next attempt.
                for name in set(sys.modules) - modules_before:
                    del sys.modules[name]
                _LOADED_FROM.pop(top, None)
                for entry in added_path:
                    with contextlib.suppress(ValueError):
                        sys.path.remove(entry)
            raise
        places = _module_places(loaded)
        if places and not any(d in p.parents for p in places for d in holders):
            raise PayloadError(
                f"{module!r} was imported from {places[0]}, not from "
                f"{', '.join(map(str, holders))} where {top!r} was found (another directory on "
                "sys.path has a package of the same name)"
            )
        return loaded


def load_class(spec: str, search: Sequence[str | Path] = ()) -> type:
    """Import ``"package.module:ClassName"``; the error names the places tried and their content."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise PayloadError(f"{spec!r}: name a class as 'package.module:ClassName'")
    dirs = search_dirs(search)
    try:
        mod = _import(module, dirs)
    except PayloadError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            where = "; ".join(_what_is_there(module, d) for d in dirs)
            raise PayloadError(
                f"cannot import {module!r} for {spec!r}: {exc}. Looked in {where}; "
                "and it is not installed"
            ) from None
        raise PayloadError(
            f"importing {module!r} for {spec!r} failed: it imports {missing!r}, which is not "
            "installed in this environment nor found in the search directories "
            f"({', '.join(map(str, dirs))})"
        ) from exc
    except Exception as exc:
        raise PayloadError(
            f"importing {module!r} for {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = mod
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PayloadError(f"module {module!r} has no {name!r} (from {spec!r})") from None
    if not isinstance(obj, type):
        raise PayloadError(f"{spec!r} is not a class")
    return obj


def payload_root(cls: type) -> Path | None:
    """The search directory the class's package was loaded from (its repository checkout).

    None for a class that was not found through a search directory (an installed package).
    """
    top = cls.__module__.partition(".")[0]
    holders = _LOADED_FROM.get(top)
    if not holders:
        return None
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if file:
        for d in holders:
            if d in Path(file).parents:
                return d
    return holders[0]


def enter_payload_root(cls: type) -> Path | None:
    """Make the payload's root the working directory, where dranspose payloads expect to run.

    For a process that runs one payload (a worker or reducer server): payloads open data files
    relative to their repository (``open("data/mask.npy")``). Returns the new working
    directory, or None (unchanged) for an installed payload.
    """
    root = payload_root(cls)
    if root is not None:
        os.chdir(root)
    return root


# ---------------------------------------------------------------------------------------------
# What a payload is told about where it runs (dranspose's ``state`` keyword)


class PayloadProvenance(BaseModel):
    """The versions dranspose puts into its states, which payloads write into their files."""

    # The dranspose release whose API is implemented here (DRANSPOSE_VERSION).
    dranspose_version: str | None = None
    # dranspose: the payload image's build metadata (from /etc/build_git_meta.json); none here.
    mapreduce_version: Any = None
    # The payload package's version: its metadata if installed, else ``git describe``.
    payload_version: str | None = None
    tango_dranspose_version: str | None = None


class PayloadWorkerState(WorkerState, PayloadProvenance):
    """``dranspose.protocol.WorkerState`` as payloads see it."""


class PayloadReducerState(ReducerState, PayloadProvenance):
    """``dranspose.protocol.ReducerState`` as payloads see it."""


@functools.cache
def _own_version() -> str | None:
    try:
        return importlib.metadata.version("tango-dranspose")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _installed_version(top: str) -> str | None:
    dists = importlib.metadata.packages_distributions().get(top) or []
    for dist in dists:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return None


@functools.cache
def git_describe(directory: Path) -> str | None:
    """``git describe --always --dirty --tags`` of a directory; None when that is not cheap."""
    git = shutil.which("git")
    if git is None or not directory.is_dir():
        return None
    # GIT_OPTIONAL_LOCKS=0: --dirty refreshes the index, which must not take the lock of a
    # repository someone is committing to.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            [git, "-C", str(directory), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=2.0,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def payload_version(cls: type) -> str | None:
    """The payload's version: package metadata if installed, else git describe, else None."""
    root = payload_root(cls)
    if root is not None:  # a checkout given as a search directory: its git state is the truth
        return git_describe(root)
    top = cls.__module__.partition(".")[0]
    version = _installed_version(top)
    if version is not None:
        return version
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not file or "site-packages" in Path(file).parts:
        return None  # an installed file is not described by a repository it may sit in
    return git_describe(Path(file).parent)


def payload_state(
    kind: Literal["worker", "reducer"], cls: type | None = None, **fields: Any
) -> PayloadWorkerState | PayloadReducerState:
    """The ``state`` a payload is constructed with; ``fields`` (name, tags, ...) override."""
    values: dict[str, Any] = {
        "dranspose_version": DRANSPOSE_VERSION,
        "tango_dranspose_version": _own_version(),
        "payload_version": payload_version(cls) if cls is not None else None,
    }
    values.update(fields)
    if kind == "worker":
        values.setdefault("name", "worker")
        return PayloadWorkerState(**values)
    return PayloadReducerState(**values)


# ---------------------------------------------------------------------------------------------
# Calling payloads


def _adapt(fn: Callable[..., Any], names: Sequence[str], what: str) -> Callable[..., Any]:
    """A callable taking dranspose's arguments ``names`` positionally, passing what ``fn`` takes.

    dranspose passes positionally (``process_event(event, parameters, tick)``, ``timer()`` in
    0.1 and ``timer(parameters)`` in 0.2), and by keyword in its replay (``finish(parameters=)``).
    So: as many positionally as ``fn`` has room for; the rest by keyword where ``fn`` names them
    (a keyword-only ``parameters`` gets them even when ``*args`` took them) or has ``**kwargs``;
    the rest dropped. Worked out once, so calls cost nothing extra in the common case.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn  # no signature (builtins): dranspose's positional call
    params = list(sig.parameters.values())
    P = inspect.Parameter
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    var_pos = any(p.kind is P.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind is P.VAR_KEYWORD for p in params)
    kw_only = {p.name for p in params if p.kind is P.KEYWORD_ONLY}
    n_pos = len(names) if var_pos else min(len(names), len(positional))
    by_kw: list[tuple[str, int]] = []
    for i, name in enumerate(names):
        if i < len(positional):
            continue
        if (var_pos and name in kw_only) or (not var_pos and (name in kw_only or var_kw)):
            by_kw.append((name, i))
    given = {p.name for p in positional[:n_pos]} | {k for k, _ in by_kw}
    needed = [
        p.name
        for p in params
        if p.default is P.empty
        and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
        and p.name not in given
    ]
    if needed:
        raise PayloadError(
            f"{what}{sig} needs {', '.join(map(repr, needed))}, which dranspose does not pass "
            f"(it passes {', '.join(names) or 'nothing'})"
        )
    if not by_kw:
        if n_pos == len(names):
            return fn
        return lambda *args: fn(*args[:n_pos])

    def call(*args: Any) -> Any:
        return fn(*args[:n_pos], **{name: args[i] for name, i in by_kw})

    return call


def describe_class(cls: type) -> dict[str, ParameterBase]:
    """The parameters a payload class describes: ``describe_parameters()`` and the fields of
    its ``parameter_class`` (empty when it has neither)."""
    found: dict[str, ParameterBase] = {}
    model = parameter_model(cls)
    if model is not None:
        try:
            found.update(describe_model(model))
        except ParameterError as exc:
            raise PayloadError(f"{cls.__name__}.parameter_class: {exc}") from None
    fn = getattr(cls, "describe_parameters", None)
    if fn is None:
        return found
    try:
        found.update(describe(fn() or []))
    except Exception as exc:
        raise PayloadError(f"{cls.__name__}.describe_parameters() failed: {exc}") from exc
    return found


def parameter_model(cls: type) -> type[BaseModel] | None:
    """The class's ``parameter_class`` (dranspose's newest form), checked; None if it has none."""
    model = getattr(cls, "parameter_class", None)
    if model is None:
        return None
    if not is_parameter_model(model):
        raise PayloadError(
            f"{cls.__name__}.parameter_class must be a pydantic BaseModel class, got {model!r}"
        )
    return model


def construct(cls: type, **offered: Any) -> Any:
    """A new payload instance with the keywords its ``__init__`` takes."""
    kwargs = _accepted_kwargs(cls, offered)
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise PayloadError(
            f"constructing {cls.__name__} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _accepted_kwargs(func: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    # dranspose constructs with keywords only; a class that takes fewer gets fewer.
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return offered
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return offered
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return {k: v for k, v in offered.items() if k in names}


Parameters = Mapping[str, WorkParameter]


class _Payload:
    """A payload instance for one scan, constructed with dranspose's keywords.

    ``state=None`` (what callers without a state of their own pass) gives a state with the
    versions (:func:`payload_state`); a :class:`ComponentState` given is completed with them.
    With a ``parameter_class`` the payload receives an instance of that model wherever dranspose
    passes parameters, built once per parameter set (the runtime passes a new mapping when the
    parameters switch).
    """

    kind: Literal["worker", "reducer"]

    def __init__(
        self,
        cls: type,
        *,
        parameters: Parameters,
        context: dict[str, Any],
        state: Any = None,
    ) -> None:
        self.cls = cls
        self._model = parameter_model(cls)
        self._last_in: Parameters | None = None
        self._last_out: Any = None
        self._last_error: ParameterError | None = None
        if state is None:
            state = payload_state(self.kind, cls)
        elif isinstance(state, ComponentState) and not isinstance(state, PayloadProvenance):
            state = payload_state(self.kind, cls, **state.model_dump())
        self.state = state
        self.instance = construct(
            cls, parameters=self.payload_parameters(parameters), context=context, state=state
        )
        self._finish = self._optional("finish", ("parameters",))
        self._bind()

    def payload_parameters(self, parameters: Parameters) -> Any:
        """What the payload receives: the mapping itself, or its ``parameter_class`` instance."""
        if self._model is None:
            return parameters
        if parameters is not self._last_in:
            self._last_in = parameters
            self._last_out = None
            self._last_error = None
            try:
                self._last_out = model_from_parameters(self._model, parameters)
            except ParameterError as exc:
                self._last_error = exc
        if self._last_error is not None:
            raise PayloadError(f"{self.cls.__name__}.parameter_class: {self._last_error}") from None
        return self._last_out

    def _method(self, name: str, args: Sequence[str]) -> Callable[..., Any]:
        fn = getattr(self.instance, name, None)
        if not callable(fn):
            raise PayloadError(f"{self.cls.__name__} has no method {name}()")
        return _adapt(fn, args, f"{self.cls.__name__}.{name}")

    def _optional(self, name: str, args: Sequence[str]) -> Callable[..., Any] | None:
        fn = getattr(self.instance, name, None)
        return _adapt(fn, args, f"{self.cls.__name__}.{name}") if callable(fn) else None

    def _bind(self) -> None:
        """Look up the instance's methods once, not per call."""

    def finish(self, parameters: Parameters) -> None:
        if self._finish is not None:
            self._finish(self.payload_parameters(parameters))


class WorkerPayload(_Payload):
    """One scan's worker instance, with dranspose's calling conventions."""

    kind = "worker"

    def _bind(self) -> None:
        self._process = self._method("process_event", ("event", "parameters", "tick"))
        self._tick = self._optional("get_tick_interval", ("parameters",))

    def process_event(self, event: EventData, parameters: Parameters, tick: bool) -> Any:
        return self._process(event, self.payload_parameters(parameters), tick)

    def tick_interval(self, parameters: Parameters) -> float | None:
        if self._tick is None:
            return None
        value = self._tick(self.payload_parameters(parameters))
        return float(value) if value is not None else None


class ReducerPayload(_Payload):
    """One scan's reducer instance."""

    kind = "reducer"

    def _bind(self) -> None:
        self._process = self._method("process_result", ("result", "parameters"))
        self._timer = self._optional("timer", ("parameters",))
        self.has_timer = self._timer is not None

    def process_result(self, result: ResultData, parameters: Parameters) -> None:
        self._process(result, self.payload_parameters(parameters))

    def timer(self, parameters: Parameters) -> float:
        """Run the payload's timer; returns the delay until the next call (default 1 s)."""
        if self._timer is None:
            return 1.0
        value = self._timer(self.payload_parameters(parameters))
        try:
            return max(float(value), 0.001) if value is not None else 1.0
        except (TypeError, ValueError):
            return 1.0

    @property
    def publish(self) -> Any:
        return getattr(self.instance, "publish", None)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """Hold the payload's ``publish_rlock`` (if any) while reading ``publish``."""
        lock = getattr(self.instance, "publish_rlock", None)
        if lock is None:
            yield self.publish
        else:
            with lock:
                yield self.publish


def close_payload(instance: Any, context: dict[str, Any]) -> None:
    fn = getattr(instance, "close", None)
    if callable(fn):
        _adapt(fn, ("context",), f"{type(instance).__name__}.close")(context)
