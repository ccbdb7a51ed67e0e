"""Bounded time series for crawls that run for days.

A :class:`Timeline` is a grid of equal-width buckets from the crawl start. It holds at most ``capacity``
buckets: when time runs past the last one, neighbouring buckets are merged pairwise and the width
doubles, so a one-minute crawl has 1-second buckets and a four-day crawl about 10-minute buckets, with
the same memory (``capacity`` x 8 bytes per series). Counters are summed when merged; gauges keep the
later value. :class:`Spans` keeps a bounded list of labelled intervals (pauses, bans) the same way.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

NAN = math.nan


@dataclass
class Timeline:
    start: float
    capacity: int = 512
    width: float = 1.0
    n: int = 0
    counters: dict[str, array[float]] = field(default_factory=dict)
    gauges: dict[str, array[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capacity < 2 or self.capacity % 2:
            raise ValueError("capacity must be an even number >= 2")
        if self.width <= 0:
            raise ValueError("width must be positive")

    # -- writing --------------------------------------------------------------------------------
    def _slot(self, t: float) -> int:
        i = max(0, int((t - self.start) // self.width))
        while i >= self.capacity:
            self._compact()
            i = max(0, int((t - self.start) // self.width))
        if i >= self.n:
            grow = i + 1 - self.n
            for values in self.counters.values():
                values.extend([0.0] * grow)
            for values in self.gauges.values():
                values.extend([NAN] * grow)
            self.n = i + 1
        return i

    def _series(self, table: dict[str, array[float]], name: str, fill: float) -> array[float]:
        values = table.get(name)
        if values is None:
            values = table[name] = array("d", [fill] * self.n)
        return values

    def add(self, name: str, t: float, value: float = 1.0) -> None:
        """Count ``value`` events of ``name`` at time ``t``."""
        i = self._slot(t)
        self._series(self.counters, name, 0.0)[i] += value

    def gauge(self, name: str, t: float, value: float) -> None:
        """Record the level of ``name`` at time ``t`` (the last value in a bucket wins)."""
        i = self._slot(t)
        self._series(self.gauges, name, NAN)[i] = value

    def touch(self, t: float) -> None:
        """Extend the grid up to ``t`` (so quiet periods at the end show as zeros)."""
        self._slot(t)

    def _compact(self) -> None:
        half = (self.n + 1) // 2
        for name, values in self.counters.items():
            merged = array("d", [0.0] * half)
            for j in range(self.n):
                merged[j // 2] += values[j]
            self.counters[name] = merged
        for name, values in self.gauges.items():
            merged = array("d", [NAN] * half)
            for j in range(self.n):
                if not math.isnan(values[j]):
                    merged[j // 2] = values[j]
            self.gauges[name] = merged
        self.n = half
        self.width *= 2

    # -- reading --------------------------------------------------------------------------------
    def times(self) -> list[float]:
        """Seconds from the start to the middle of each bucket."""
        return [(i + 0.5) * self.width for i in range(self.n)]

    def total(self, name: str) -> float:
        return float(sum(self.counters.get(name, ())))

    def rate(self, name: str) -> list[float]:
        """Events per second in each bucket."""
        values = self.counters.get(name)
        if values is None:
            return [0.0] * self.n
        return [v / self.width for v in values]

    def level(self, name: str) -> list[float | None]:
        values = self.gauges.get(name)
        if values is None:
            return [None] * self.n
        return [None if math.isnan(v) else v for v in values]

    def recent_rate(self, name: str, now: float, seconds: float) -> float:
        """Events per second of ``name`` over the last ``seconds`` (bucket resolution)."""
        values = self.counters.get(name)
        if not values or seconds <= 0:
            return 0.0
        last = min(self.n - 1, max(0, int((now - self.start) // self.width)))
        first = max(0, math.ceil((now - seconds - self.start) / self.width - 1e-9))
        if first > last:
            first = last
        span = (last - first + 1) * self.width
        # the current bucket is partly elapsed: count only its elapsed part in the denominator
        span -= max(0.0, (last + 1) * self.width - (now - self.start))
        return float(sum(values[first : last + 1])) / max(span, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "bucket_seconds": self.width,
            "t": self.times(),
            "counters": {k: list(v) for k, v in sorted(self.counters.items())},
            "gauges": {k: self.level(k) for k in sorted(self.gauges)},
        }


@dataclass
class Spans:
    """Labelled time intervals (e.g. ``retry-after`` pauses, ``ban`` cool-downs), at most ``capacity``:
    overlapping intervals with the same label merge; past the cap the two closest neighbours merge."""

    capacity: int = 256
    items: list[list[Any]] = field(default_factory=list)  # [start, end, label]

    def add(self, start: float, end: float, label: str) -> None:
        end = max(start, end)
        for span in reversed(self.items[-8:]):
            if span[2] == label and span[0] <= end and start <= span[1]:
                span[0], span[1] = min(span[0], start), max(span[1], end)
                return
        self.items.append([start, end, label])
        if len(self.items) > 1 and self.items[-2][0] > start:
            self.items.sort(key=lambda s: s[0])
        if len(self.items) > self.capacity:
            self._merge_closest()

    def extend_to(self, label: str, start: float, end: float) -> None:
        """Open or stretch the latest span of ``label`` (for a state that is still on)."""
        for span in reversed(self.items[-8:]):
            if span[2] == label and span[1] >= start - 1e-9:
                span[1] = max(span[1], end)
                return
        self.add(start, end, label)

    def _merge_closest(self) -> None:
        best, gap = 0, math.inf
        for i in range(len(self.items) - 1):
            a, b = self.items[i], self.items[i + 1]
            if a[2] == b[2] and b[0] - a[1] < gap:
                best, gap = i, b[0] - a[1]
        if gap == math.inf:  # no two neighbours share a label: drop the oldest
            del self.items[0]
            return
        a, b = self.items[best], self.items.pop(best + 1)
        a[1] = max(a[1], b[1])

    def active(self, now: float) -> list[list[Any]]:
        return [s for s in self.items if s[0] <= now < s[1]]

    def to_list(self, origin: float = 0.0) -> list[dict[str, Any]]:
        return [{"start": s[0] - origin, "end": s[1] - origin, "label": s[2]} for s in self.items]
