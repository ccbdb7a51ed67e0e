"""The site-aware frontier: requests kept per site, each leaving only when its site may send now.

    frontier.push(site, key, request, now, due=None)   # key: the spider's order within the site
    frontier.pop(now) -> (site, request) | None        # a request whose site's gate said yes
    frontier.released(site, now)                       # a request of the site ended
    frontier.next_wake()                               # when to ask again (None: nothing waits on time)

Sites wait in one ready-time heap (Heritrix/StormCrawler's per-host queues with a ready time): a site
whose gate says "in 0.4 s" goes back into the heap at that time; one whose concurrency is full waits for
its next release; the ready ones are served in turn (round robin: equal ready times keep their order).
A waiting request holds nothing: no slot anywhere, and past ``memory_limit`` requests in memory it waits
on disk (:class:`~imagecrawl.pacing.spill.SpillStore`), each site keeping its first few in memory.

Pure: no Scrapy, no clock, no I/O but the spill file. Requests are opaque objects (``encode`` /
``decode`` turn them into bytes for the disk; ``encode`` returns None for one that cannot be).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from imagecrawl.pacing.spill import Key, SpillStore
from imagecrawl.tuning import DEFAULTS

T = TypeVar("T")

#: admit(site, now): 0 go (the caller took a slot); > 0 ask again in that many seconds; inf never
#: (the site is given up); None: when one of the site's requests is released.
Admit = Callable[[str, float], "float | None"]
#: A site waiting for a release is asked again after this anyway (a release that never comes must not
#: hang the crawl).
RELEASE_FALLBACK_SECONDS = 1.0
#: requests read back from the disk at a time, per site
LOAD_BATCH = 32


@dataclass(slots=True)
class _Site(Generic[T]):
    name: str
    mem: list[tuple[Key, T]] = field(default_factory=list)  # a heap on the key
    disk: int = 0
    disk_head: Key | None = None
    delayed: int = 0
    token: int = 0  # the current ready-heap entry; older entries are stale
    scheduled: bool = False  # has a live ready-heap entry
    waiting_release: bool = False
    dropped: str | None = None  # why the site's requests are dropped

    def __len__(self) -> int:
        return len(self.mem) + self.disk


#: FrontierConfig's own defaults (the others are the tuning's)
KEEP_PER_SITE = 4
LOOKAHEAD_PER_SITE = 8


@dataclass(frozen=True, slots=True)
class FrontierConfig:
    #: requests kept in memory before further ones wait on disk
    memory_limit: int = DEFAULTS.frontier_memory_requests
    #: a site keeps at least its first this many requests in memory
    keep_per_site: int = KEEP_PER_SITE
    #: read-ahead: the frontier wants more start requests while fewer than this many requests are
    #: queued among the first ``lookahead_per_site`` of each site
    read_ahead: int = DEFAULTS.frontier_read_ahead
    lookahead_per_site: int = LOOKAHEAD_PER_SITE


class Frontier(Generic[T]):
    def __init__(
        self,
        admit: Admit,
        peek: Callable[[str, float], float],
        config: FrontierConfig,
        *,
        spill: Callable[[], SpillStore] | None = None,
        encode: Callable[[T], bytes | None] | None = None,
        decode: Callable[[bytes], T | None] | None = None,
        on_drop: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.admit = admit
        self.peek = peek
        self.config = config
        self._spill_factory = spill
        self._spill: SpillStore | None = None
        self.encode = encode
        self.decode = decode
        self.on_drop = on_drop or (lambda site, n, reason: None)
        self.sites: dict[str, _Site[T]] = {}
        self._ready: list[tuple[float, int, str, int]] = []  # (ready at, tick, site, token)
        self._delayed: list[tuple[float, int, str, Key, T]] = []  # (due, tick, site, key, request)
        self._tick = 0
        self.in_memory = 0
        self.on_disk = 0
        self.spilled = 0  # requests that went to disk, in all
        self.unspillable = 0  # requests kept in memory past the limit because they cannot be encoded
        self._lookahead = 0  # sum over sites of min(len(site), lookahead_per_site)
        #: the key of the request :meth:`pop` returned last
        self.popped_key: Key | None = None

    # --- in -----------------------------------------------------------------------------------

    def push(self, site: str, key: Key, request: T, now: float, due: float | None = None) -> bool:
        """Queue ``request``; False (nothing queued) when the site's requests are being dropped."""
        s = self.sites.get(site)
        if s is None:
            s = self.sites[site] = _Site(site)
        if s.dropped is not None:
            return False
        if due is not None and due > now:
            self._tick += 1
            heapq.heappush(self._delayed, (due, self._tick, site, key, request))
            s.delayed += 1
            return True
        self._add(s, key, request, now)
        return True

    def _add(self, s: _Site[T], key: Key, request: T, now: float) -> None:
        before = len(s)
        c = self.config
        if (
            self.in_memory >= c.memory_limit
            and len(s.mem) >= c.keep_per_site
            and self._spill_factory is not None
            and self.encode is not None
        ):
            data = self.encode(request)
            if data is not None:
                self.spill_store().push(s.name, key, data)
                s.disk += 1
                self.on_disk += 1
                self.spilled += 1
                if s.disk_head is None or key < s.disk_head:
                    s.disk_head = key
                self._grew(s, before)
                return
            self.unspillable += 1
        heapq.heappush(s.mem, (key, request))
        self.in_memory += 1
        self._grew(s, before)

    def _grew(self, s: _Site[T], before: int) -> None:
        if before < self.config.lookahead_per_site:
            self._lookahead += 1
        if not s.scheduled and not s.waiting_release:
            self._schedule(s, -math.inf)

    def spill_store(self) -> SpillStore:
        if self._spill is None:
            assert self._spill_factory is not None
            self._spill = self._spill_factory()
        return self._spill

    # --- out ----------------------------------------------------------------------------------

    def pop(self, now: float) -> tuple[str, T] | None:
        self._due(now)
        ready = self._ready
        while ready and ready[0][0] <= now:
            _, _, name, token = heapq.heappop(ready)
            s = self.sites.get(name)
            if s is None or token != s.token:
                continue  # stale entry
            s.scheduled = False
            if not self._load_head(s):
                continue  # empty: scheduled again by its next push
            wait = self.admit(name, now)
            if wait is None:
                s.waiting_release = True
                self._schedule(s, now + RELEASE_FALLBACK_SECONDS)
                continue
            s.waiting_release = False
            if math.isinf(wait):
                self.drop(name, "given up")
                continue
            if wait > 0:
                self._schedule(s, now + wait)
                continue
            self.popped_key, request = heapq.heappop(s.mem)
            self.in_memory -= 1
            if len(s) < self.config.lookahead_per_site:
                self._lookahead -= 1
            if len(s) or s.disk:
                self._schedule(s, now + max(0.0, self.peek(name, now)))
            return name, request
        return None

    def _load_head(self, s: _Site[T]) -> bool:
        """Make the site's first request (by key) the top of its memory heap; False if it has none."""
        while s.disk and (not s.mem or (s.disk_head is not None and s.disk_head < s.mem[0][0])):
            store = self.spill_store()
            rows = store.pop(s.name, LOAD_BATCH)
            if not rows:  # the file lost them: forget the count
                self.on_disk -= s.disk
                s.disk = 0
                s.disk_head = None
                store.forget(s.name)
                break
            s.disk -= len(rows)
            self.on_disk -= len(rows)
            s.disk_head = store.head(s.name) if s.disk else None
            if not s.disk:
                store.forget(s.name)
            bad = 0
            for key, data in rows:
                obj = self.decode(data) if self.decode is not None else None
                if obj is None:
                    bad += 1
                    continue
                heapq.heappush(s.mem, (key, obj))
                self.in_memory += 1
            if bad:
                self._shrunk_by(s, len(s) + bad, bad)
                self.on_drop(s.name, bad, "undecodable")
        return bool(s.mem)

    def _shrunk_by(self, s: _Site[T], before: int, n: int) -> None:
        k = self.config.lookahead_per_site
        self._lookahead -= min(before, k) - min(before - n, k)

    def _due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, name, key, request = heapq.heappop(delayed)
            s = self.sites[name]
            s.delayed -= 1
            if s.dropped is not None:
                self.on_drop(name, 1, s.dropped)
                continue
            self._add(s, key, request, now)

    def _schedule(self, s: _Site[T], at: float) -> None:
        self._tick += 1
        s.token += 1
        s.scheduled = True
        heapq.heappush(self._ready, (at, self._tick, s.name, s.token))

    def released(self, site: str, now: float) -> None:
        """A request of ``site`` ended: a site waiting for a free slot is asked again now."""
        s = self.sites.get(site)
        if s is not None and s.waiting_release:
            s.waiting_release = False
            if len(s):
                self._schedule(s, now)

    def holds(self, site: str) -> bool:
        """The frontier still has something of ``site``: queued or delayed requests, or a drop reason."""
        s = self.sites.get(site)
        return s is not None and (len(s) > 0 or s.delayed > 0 or s.dropped is not None)

    def forget_empty(self) -> int:
        """Drop the entries of sites with nothing queued (a broad crawl passes through many sites once)."""
        gone = [
            name
            for name, s in self.sites.items()
            if not len(s) and not s.delayed and s.dropped is None and not s.scheduled and not s.waiting_release
        ]
        for name in gone:
            del self.sites[name]
        return len(gone)

    def drop(self, site: str, reason: str) -> int:
        """Drop every queued request of ``site`` (and those that come later); returns how many."""
        s = self.sites.get(site)
        if s is None:
            s = self.sites[site] = _Site(site)
        s.dropped = reason
        n = len(s)
        self._shrunk_by(s, n, n)
        self.in_memory -= len(s.mem)
        s.mem.clear()
        if s.disk:
            self.on_disk -= s.disk
            self.spill_store().drop(site)
            self.spill_store().forget(site)
            s.disk = 0
            s.disk_head = None
        s.token += 1
        s.scheduled = s.waiting_release = False
        if n:
            self.on_drop(site, n, reason)
        return n

    # --- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.in_memory + self.on_disk + len(self._delayed)

    def next_wake(self) -> float | None:
        """The earliest time a site (or a delayed request) may be ready."""
        times = []
        if self._ready:
            times.append(self._ready[0][0])
        if self._delayed:
            times.append(self._delayed[0][0])
        return min(times) if times else None

    def wants_more(self) -> bool:
        """Read-ahead: True while the sites' next requests are few enough to take more."""
        return self._lookahead < self.config.read_ahead

    # --- persistence (JOBDIR) -----------------------------------------------------------------

    def persist(self) -> int:
        """Write every queued request to the spill file (a clean stop with JOBDIR). Returns how many
        could not be encoded (they are lost, and the caller says so)."""
        store = self.spill_store()
        assert self.encode is not None
        lost = 0
        entries: list[tuple[str, Key, T]] = [(s.name, k, r) for s in self.sites.values() for k, r in s.mem]
        entries += [(name, key, r) for _, _, name, key, r in self._delayed]
        for name, key, request in entries:
            data = self.encode(request)
            if data is None:
                lost += 1
                continue
            store.push(name, key, data)
        store.set_meta("tick", self._tick)
        for s in self.sites.values():
            s.mem.clear()
        self._delayed.clear()
        self.in_memory = 0
        return lost

    def load(self, now: float) -> int:
        """Take over the requests a previous run left in the spill file. Returns how many."""
        store = self.spill_store()
        total = 0
        for name, count, head in store.index():
            s = self.sites.get(name)
            if s is None:
                s = self.sites[name] = _Site(name)
            before = len(s)
            s.disk += count
            s.disk_head = head if s.disk_head is None else min(s.disk_head, head)
            self.on_disk += count
            total += count
            k = self.config.lookahead_per_site
            self._lookahead += min(before + count, k) - min(before, k)
            if not s.scheduled:
                self._schedule(s, now)
        self._tick = max(self._tick, store.get_meta("tick"))
        return total

    @property
    def tick(self) -> int:
        self._tick += 1
        return self._tick

    def close(self, remove: bool) -> None:
        if self._spill is not None:
            self._spill.close(remove=remove)
            self._spill = None
