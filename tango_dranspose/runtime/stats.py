"""Small running statistics for counters exposed as attributes."""

from __future__ import annotations

import threading
import time
from collections import deque


class Percentiles:
    """Mean and quantiles over the last ``size`` samples (bounded memory)."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def mean(self) -> float:
        return sum(self._samples) / len(self._samples) if self._samples else 0.0

    def quantile(self, q: float) -> float:
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


class Rate:
    """Events per second over a sliding window of recent counts."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._marks: deque[tuple[float, int]] = deque()

    def update(self, total: int) -> None:
        now = time.monotonic()
        self._marks.append((now, total))
        while len(self._marks) > 2 and now - self._marks[0][0] > self.window:
            self._marks.popleft()

    def value(self) -> float:
        if len(self._marks) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._marks[0], self._marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class ByteBudget:
    """Bytes queued between a receiving loop and a processing thread, with a ceiling.

    One item larger than the ceiling still passes when nothing else is queued, so a huge
    result slows the pipeline down instead of stopping it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    def _fits(self, n: int) -> bool:
        return self.used == 0 or self.used + n <= self.limit

    def try_take(self, n: int) -> bool:
        with self._cond:
            if not self._fits(n):
                return False
            self._add(n)
            return True

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes fit (a thread's call: it blocks)."""
        with self._cond:
            self._cond.wait_for(lambda: self._fits(n))
            self._add(n)

    def give(self, n: int) -> None:
        with self._cond:
            self.used = max(self.used - n, 0)
            self._cond.notify_all()

    def _add(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)
