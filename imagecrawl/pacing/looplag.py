"""How late this process runs its own work: the event loop's scheduling delay, measured, so the pacer
can tell a slow site from a busy crawler. No Scrapy (asyncio only).

A site's latency as the crawler sees it (Scrapy's ``download_latency``: request sent to headers read)
includes the time the answer waited for the event loop: on a machine whose cores are busy, or while the
crawl's own callbacks hold the loop, that wait grows although the site is as fast as ever. The probe
schedules one timer every ``interval`` seconds (one per crawl, not per request) and records how late it
fires; :meth:`LoopLag.recent` is the worst lateness over the last ``window`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LoopLag:
    def __init__(self, interval: float = 0.05, window: float = 2.0) -> None:
        self.interval = interval
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._worst = 0.0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._handle is not None:
            return
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an asyncio loop (another reactor): no probe, no correction
                return
        self._schedule(loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = time.monotonic() + self.interval
        self._handle = loop.call_later(self.interval, self._fired, loop)

    def _fired(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        self.record(max(0.0, now - self._due), now)
        self._schedule(loop)

    def record(self, lateness: float, now: float) -> None:
        """One measurement: ``lateness`` seconds at monotonic time ``now``."""
        samples = self._samples
        samples.append((now, lateness))
        while samples and samples[0][0] < now - self.window:
            samples.popleft()
        self._worst = max(s[1] for s in samples)

    def recent(self, now: float | None = None) -> float:
        """The worst lateness over the last ``window`` seconds (0 without samples). A probe that has not
        fired for longer than it should counts that overdue time too: the loop is stuck right now."""
        now = time.monotonic() if now is None else now
        overdue = max(0.0, now - self._due) if self._handle is not None else 0.0
        fresh = self._worst if self._samples and self._samples[-1][0] >= now - self.window else 0.0
        return max(fresh, overdue)
