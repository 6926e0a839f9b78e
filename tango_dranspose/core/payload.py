"""Loading and calling user payloads (worker and reducer classes) as dranspose does.

``"package.module:ClassName"`` is imported normally first; when the top-level package is not
importable, it is looked up in the given search directories, without adding them to
``sys.path`` (so two pipelines in one interpreter cannot shadow each other's modules).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tango_dranspose.core.events import EventData, ResultData
from tango_dranspose.core.parameters import ParameterBase, WorkParameter, describe


class PayloadError(RuntimeError):
    """A payload class that cannot be found, loaded or constructed."""


def _import_from(module: str, search: Sequence[str | Path]) -> Any:
    top = module.split(".")[0]
    if top not in sys.modules:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(p) for p in search])
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[top] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[top]
            raise
    return importlib.import_module(module)


def load_class(spec: str, search: Sequence[str | Path] = ()) -> type:
    """Import ``"package.module:ClassName"``; the error says what was tried."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise PayloadError(f"{spec!r}: name a class as 'package.module:ClassName'")
    try:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not search or exc.name != module.split(".")[0]:
                raise
            mod = _import_from(module, search)
    except ModuleNotFoundError as exc:
        where = f" (also looked in {', '.join(map(str, search))})" if search else ""
        raise PayloadError(f"cannot import {module!r} for {spec!r}: {exc}{where}") from None
    except Exception as exc:
        raise PayloadError(
            f"importing {module!r} for {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj = mod
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PayloadError(f"module {module!r} has no {name!r} (from {spec!r})") from None
    if not isinstance(obj, type):
        raise PayloadError(f"{spec!r} is not a class")
    return obj


def _accepted_kwargs(func: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return offered
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return offered
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return {k: v for k, v in offered.items() if k in names}


def _positional_capacity(func: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 99
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 99
    return sum(
        1
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def describe_class(cls: type) -> dict[str, ParameterBase]:
    """The parameters a payload class describes (empty when it has no describe_parameters)."""
    fn = getattr(cls, "describe_parameters", None)
    if fn is None:
        return {}
    try:
        return describe(fn() or [])
    except Exception as exc:
        raise PayloadError(f"{cls.__name__}.describe_parameters() failed: {exc}") from exc


def construct(cls: type, **offered: Any) -> Any:
    """A new payload instance with the keywords its ``__init__`` takes."""
    kwargs = _accepted_kwargs(cls, offered)
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise PayloadError(
            f"constructing {cls.__name__} failed: {type(exc).__name__}: {exc}"
        ) from exc


class _Payload:
    """A payload instance for one scan, constructed with dranspose's keywords."""

    def __init__(
        self,
        cls: type,
        *,
        parameters: dict[str, WorkParameter],
        context: dict[str, Any],
        state: Any = None,
    ) -> None:
        self.instance = construct(cls, parameters=parameters, context=context, state=state)
        self._bind()

    def _bind(self) -> None:
        """Look up the instance's methods once, not per call."""

    def finish(self, parameters: dict[str, WorkParameter]) -> None:
        fn = getattr(self.instance, "finish", None)
        if fn is not None:
            fn(parameters)


class WorkerPayload(_Payload):
    """One scan's worker instance, with dranspose's calling conventions."""

    def _bind(self) -> None:
        fn = self.instance.process_event
        # dranspose calls process_event(event, parameters, tick) positionally; tolerate
        # payloads that only take (event) or (event, parameters).
        self._arity = min(_positional_capacity(fn), 3)
        self._process = fn

    def process_event(
        self, event: EventData, parameters: dict[str, WorkParameter], tick: bool
    ) -> Any:
        if self._arity >= 3:
            return self._process(event, parameters, tick)
        if self._arity == 2:
            return self._process(event, parameters)
        return self._process(event)

    def tick_interval(self, parameters: dict[str, WorkParameter]) -> float | None:
        fn = getattr(self.instance, "get_tick_interval", None)
        if fn is None:
            return None
        value = fn(parameters)
        return float(value) if value is not None else None


class ReducerPayload(_Payload):
    """One scan's reducer instance."""

    def _bind(self) -> None:
        self._process = self.instance.process_result
        self.has_timer = callable(getattr(self.instance, "timer", None))

    def process_result(self, result: ResultData, parameters: dict[str, WorkParameter]) -> None:
        self._process(result, parameters)

    def timer(self, parameters: dict[str, WorkParameter]) -> float:
        """Run the payload's timer; returns the delay until the next call (default 1 s)."""
        value = self.instance.timer(parameters) if self.has_timer else None
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
    if fn is not None:
        fn(context)
