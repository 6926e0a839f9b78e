"""Writing a payload's ``publish`` tree to HDF5, atomically.

Dicts become groups, arrays and numbers datasets, strings and lists of strings UTF-8 string
datasets. ``"<name>_attrs"`` holds the attributes of the sibling ``<name>``; ``"_attrs"`` those
of the group itself. Values that HDF5 cannot hold are skipped and reported, never fatal.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ATTRS_SUFFIX = "_attrs"
_STR = h5py.string_dtype("utf-8")


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, bool | int | float | complex | np.generic):
        return np.asarray(value)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) for v in value):
            return np.asarray(value, dtype=_STR)
        try:
            arr = np.asarray(value)
        except ValueError:
            return None
        return arr if arr.dtype != object else None
    return None


def _attr_value(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return np.asarray(value, dtype=_STR)
    return value


def write_tree(
    group: h5py.Group,
    tree: Mapping[str, Any],
    *,
    skipped: list[str] | None = None,
    path: str = "",
) -> None:
    """Write ``tree`` into ``group``; what could not be written is named in ``skipped``."""
    skipped = skipped if skipped is not None else []
    attrs: dict[str, Mapping[str, Any]] = {}
    for key, value in tree.items():
        key = str(key)
        where = f"{path}/{key}"
        if key == ATTRS_SUFFIX:
            attrs[""] = value
            continue
        if key.endswith(ATTRS_SUFFIX) and isinstance(value, Mapping):
            attrs[key[: -len(ATTRS_SUFFIX)]] = value
            continue
        if isinstance(value, Mapping):
            write_tree(group.require_group(key), value, skipped=skipped, path=where)
        elif isinstance(value, str):
            group.create_dataset(key, data=value, dtype=_STR)
        elif value is None:
            skipped.append(f"{where} (None)")
        else:
            arr = _as_array(value)
            if arr is None or (arr.dtype == object and h5py.check_string_dtype(arr.dtype) is None):
                skipped.append(f"{where} ({type(value).__name__} of Python objects)")
                continue
            try:
                group.create_dataset(key, data=arr)
            except (TypeError, ValueError) as exc:
                skipped.append(f"{where} ({exc})")
    for name, mapping in attrs.items():
        target = group if name == "" else group.get(name)
        if target is None or not isinstance(mapping, Mapping):
            skipped.append(f"{path}/{name}{ATTRS_SUFFIX} (no sibling {name!r})")
            continue
        for k, v in mapping.items():
            try:
                target.attrs[str(k)] = _attr_value(v)
            except (TypeError, ValueError):
                skipped.append(f"{path}/{name}@{k} ({type(v).__name__})")


def write_file(
    path: str | os.PathLike[str],
    tree: Mapping[str, Any],
    *,
    extra: Callable[[h5py.File], None] | None = None,
    overwrite: bool = True,
) -> list[str]:
    """Write ``tree`` to ``path`` atomically; returns the names of what was skipped.

    The file is written under a temporary name beside ``path`` and then renamed, so readers
    never see half a file. It is created with mode 0666 minus the process's umask (and the
    directory's default ACL), as any other file of the process: a result written by a service
    account is readable by whoever the umask lets read it. With ``overwrite=False`` an existing
    ``path`` is never replaced: FileExistsError, and nothing is left behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target)
    skipped: list[str] = []
    try:
        with h5py.File(tmp, "w") as f:
            write_tree(f, tree, skipped=skipped)
            if extra is not None:
                extra(f)
        # On disk before the name points at it: after a crash the name holds the old file or
        # the whole new one, not an empty one.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
        else:
            _publish_new(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when renamed; what a failure left
    return skipped


def _create_temporary(target: Path) -> Path:
    # Not tempfile.mkstemp: it creates files 0600 whatever the umask. O_EXCL with a random
    # name is the same guarantee (nobody else's file is opened) with the usual mode.
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def _publish_new(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the name ``target`` unless that name exists, atomically where possible."""
    try:
        # A hard link fails if the name exists, in one step: no window for another writer.
        os.link(tmp, target)
        return
    except FileExistsError:
        raise FileExistsError(f"{target} exists already") from None
    except OSError:
        pass  # a file system without hard links (some network and FUSE mounts)
    if os.path.lexists(target):
        raise FileExistsError(f"{target} exists already")
    os.replace(tmp, target)


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """Read a group back into a dict (strings decoded), for tests and tools."""
    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = read_tree(item)
        else:
            if h5py.check_string_dtype(item.dtype) is not None:
                data = item.asstr()[()]
                out[key] = data.tolist() if isinstance(data, np.ndarray) else data
            else:
                out[key] = item[()]
    return out
