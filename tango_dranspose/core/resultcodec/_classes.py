"""Which classes a message may ask the decoder to rebuild, and how it finds them.

A class is looked up in ``sys.modules``, never imported, and only under the prefixes of a
:class:`ClassAllowList`; it must be a dataclass or pydantic model defined where it is named.
"""

from __future__ import annotations

import dataclasses
import sys
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from tango_dranspose.core.resultcodec._wire import ResultDecodeError


@dataclasses.dataclass(frozen=True)
class ClassAllowList:
    """Module prefixes whose dataclasses and pydantic models a message may name.

    ``"pkg."`` allows module ``pkg`` and everything below it, not ``pkg_other``.
    """

    prefixes: tuple[str, ...]
    # name -> (module object, class); the module object detects a reload.
    _resolved: dict[str, tuple[ModuleType, type]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        prefixes = tuple(p if p.endswith(".") else p + "." for p in self.prefixes)
        for prefix in prefixes:
            if not all(part.isidentifier() for part in prefix[:-1].split(".")):
                raise ValueError(f"allow-list prefix {prefix!r} is not a dotted module name")
        object.__setattr__(self, "prefixes", prefixes)

    def allows(self, module: str) -> bool:
        dotted = module + "."
        return any(dotted.startswith(prefix) for prefix in self.prefixes)


def allow_list_for(*specs: str) -> ClassAllowList:
    """The allow list for payloads named ``"pkg.module:Class"``: their top-level packages and
    ``tango_dranspose``."""
    prefixes = []
    for spec in specs:
        top = spec.partition(":")[0].split(".")[0]
        if not top.isidentifier():
            raise ValueError(f"{spec!r}: expected 'package.module:ClassName'")
        prefixes.append(top + ".")
    prefixes.append("tango_dranspose.")
    return ClassAllowList(tuple(dict.fromkeys(prefixes)))


def resolve_class(allowed: ClassAllowList, name: Any) -> type:
    """The dataclass or pydantic model class a message names, if ``allowed`` lets it."""
    if type(name) is not str:
        raise ResultDecodeError("class name must be text 'module:QualName'")
    cached = allowed._resolved.get(name)
    if cached is not None and sys.modules.get(cached[1].__module__) is cached[0]:
        return cached[1]
    module_name, sep, qualname = name.partition(":")
    if not sep or not module_name or not qualname:
        raise ResultDecodeError(f"refusing class {name!r}: expected 'module:QualName'")
    if not allowed.allows(module_name):
        raise ResultDecodeError(
            f"refusing to rebuild {name}: {module_name} is outside the allowed packages "
            f"{list(allowed.prefixes)}"
        )
    # Never import: a message must not be able to make us run a module's top level.
    module = sys.modules.get(module_name)
    if module is None:
        raise ResultDecodeError(
            f"refusing to rebuild {name}: module {module_name} is not imported here"
        )
    obj: Any = module
    for part in qualname.split("."):
        if not part.isidentifier() or not (obj is module or isinstance(obj, type)):
            raise ResultDecodeError(f"refusing to rebuild {name}: not a class")
        # __dict__ lookups, not getattr: no module __getattr__ or descriptor runs.
        obj = vars(obj).get(part)
    if not isinstance(obj, type) or not (
        dataclasses.is_dataclass(obj) or issubclass(obj, BaseModel)
    ):
        raise ResultDecodeError(
            f"refusing to rebuild {name}: not a dataclass or pydantic model class"
        )
    # A name imported into an allowed module from elsewhere must not pass as allowed.
    if obj.__module__ != module_name or obj.__qualname__ != qualname:
        raise ResultDecodeError(
            f"refusing to rebuild {name}: it is {obj.__module__}:{obj.__qualname__}"
        )
    allowed._resolved[name] = (module, obj)
    return obj
