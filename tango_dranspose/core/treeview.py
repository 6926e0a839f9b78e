"""A short, readable rendering of a ``publish`` tree for terminals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray, width: int = 40) -> str:
    """A curve in one line of text (resampled to ``width`` points)."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return ""
    if data.size > width:
        data = np.array([chunk.mean() for chunk in np.array_split(data, width)])
    low, high = data.min(), data.max()
    if high == low:
        return _BARS[0] * data.size
    idx = ((data - low) / (high - low) * (len(_BARS) - 1)).round().astype(int)
    return "".join(_BARS[i] for i in idx)


def _leaf(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return f"array{value.shape} {value.dtype} (empty)"
        if value.size <= 8:
            return f"{value.dtype} {np.array2string(value, precision=4, separator=', ')}"
        if np.issubdtype(value.dtype, np.number):
            text = (
                f"array{value.shape} {value.dtype}, min {value.min():.4g}, "
                f"max {value.max():.4g}, sum {value.sum():.6g}"
            )
            if value.ndim == 1:
                text += f"\n      {sparkline(value)}"
            return text
        return f"array{value.shape} {value.dtype}"
    if isinstance(value, list | tuple) and len(value) > 8:
        return f"{type(value).__name__} of {len(value)}: {value[:4]!r} ..."
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def describe_tree(tree: Any, indent: str = "  ") -> str:
    """One line per leaf: ``path: value summary``."""
    if tree is None:
        return f"{indent}(the reducer published nothing)"
    if not isinstance(tree, Mapping):
        return f"{indent}{_leaf(tree)}"
    lines: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                walk(value, path)
            else:
                lines.append(f"{indent}{path}: {_leaf(value)}")

    walk(tree, "")
    return "\n".join(lines) if lines else f"{indent}(empty)"
