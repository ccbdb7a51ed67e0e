"""The site-aware frontier as Scrapy's ``SCHEDULER``: per-site queues, each request leaving only when its
site may send now (docs/architecture.md#the-frontier).

:class:`FrontierScheduler` is a thin shell over :class:`imagecrawl.pacing.frontier.Frontier` (pure): it
keys requests by pacing site, keeps the spider's order within a site (priority, then Scrapy's LIFO/FIFO;
start requests FIFO after other requests of their priority, as Scrapy's own queues do), asks the pacing
gate (rate, concurrency, Retry-After, Crawl-delay, bans, the dead-site circuit) before a request leaves,
and wakes the engine when the next site becomes ready. A request that waits holds nothing: not a
``CONCURRENT_REQUESTS`` slot, not a pacing slot, and past ``IMAGECRAWL_TUNING['frontier_memory_requests']`` not
even memory (it waits in a SQLite file: ``JOBDIR/frontier.sqlite3`` with JOBDIR, where it stays for
the resume after a clean stop; else ``<state dir>/frontier/``, removed at the end).

Scrapy's engine asks ``next_request()`` after every download and on a 5 s heartbeat, and offers no
public way to be asked sooner: :func:`wake_engine` is the one place that reaches into the engine for
that (tested against the pinned Scrapy in tests/test_frontier_scheduler.py).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import secrets
import socket
import time
import weakref
from pathlib import Path
from typing import Any, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.dupefilters import RFPDupeFilter
from scrapy.utils.asyncio import call_later
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.job import job_dir
from scrapy.utils.misc import build_from_crawler, load_object
from scrapy.utils.request import RequestFingerprinterProtocol, request_from_dict

from imagecrawl import meta
from imagecrawl.pacing.frontier import Frontier, FrontierConfig
from imagecrawl.pacing.gate import COMPACT_AFTER_SECONDS
from imagecrawl.pacing.seen import FingerprintSet, key_of
from imagecrawl.pacing.spill import Key, SpillStore
from imagecrawl.state import state_dir_for
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

#: the frontier's file in JOBDIR
JOBDIR_FILE = "frontier.sqlite3"
#: the site of requests that are not paced (``imagecrawl_dont_pace``, data: and file: URLs)
UNPACED = ""


def wake_engine(engine: Any) -> bool:
    """Ask Scrapy's engine for the next requests now instead of at its next heartbeat.

    Scrapy 2.19 has no public call for this: ``engine._slot.nextcall`` (a ``CallLaterOnce``) is what
    ``engine.crawl()`` and the end of every download schedule. This is the project's one access to it."""
    slot = getattr(engine, "_slot", None)
    nextcall = getattr(slot, "nextcall", None)
    if nextcall is None:
        return False
    nextcall.schedule()
    return True


def engine_closing(engine: Any) -> bool:
    """True once the engine stops or the spider is closing (``engine._slot.closing``, the engine's own
    flag; Scrapy sends no signal before it waits for the requests in progress)."""
    if engine is None or not engine.running:
        return True
    slot = getattr(engine, "_slot", None)
    return slot is None or getattr(slot, "closing", None) is not None


class EngineWakeup:
    """A scheduler's one timer that wakes the engine when its earliest waiting site opens (shared by the
    local and the Redis frontier). The scheduler sets ``crawler``, ``call_later``, ``_timer`` and ``_timer_at``."""

    crawler: Crawler
    call_later: Any
    _timer: Any
    _timer_at: float

    def _arm(self, at: float | None, now: float) -> None:
        if at is None or (self._timer is not None and self._timer_at <= at):
            return
        self._cancel_timer()
        self._timer_at = at
        self._timer = self.call_later(max(0.0, at - now), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        wake_engine(self._engine())

    def _engine(self) -> Any:
        try:
            return self.crawler.engine
        except RuntimeError:  # not crawling
            return None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf


class FrontierScheduler(EngineWakeup):
    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.crawler = crawler
        self.stats = crawler.stats
        settings = crawler.settings
        self.df: Any = build_from_crawler(load_object(settings["DUPEFILTER_CLASS"]), crawler)
        self.jobdir = job_dir(settings)
        self.lifo = "lifo" in str(settings.get("SCHEDULER_MEMORY_QUEUE")).lower()
        # With JOBDIR every request that can be written waits on disk, as in Scrapy's own scheduler (a
        # clean stop then has little left to write); a site's next few are read back in batches.
        self.config = FrontierConfig(
            memory_limit=0 if self.jobdir else max(1, tuning(settings).frontier_memory_requests),
            keep_per_site=0 if self.jobdir else FrontierConfig().keep_per_site,
            read_ahead=max(1, tuning(settings).frontier_read_ahead),
        )
        self.forget_idle = tuning(settings).pacing_forget_idle_seconds
        self._next_forget = 0.0
        self.first_contact_timeout = tuning(settings).policy_timeout_seconds
        if self.first_contact_timeout >= settings.getfloat("DOWNLOAD_TIMEOUT"):
            self.first_contact_timeout = 0.0
        self.runtime: Any = None
        if settings.getbool("IMAGECRAWL_PACING_ENABLED"):
            from imagecrawl.pacing.downloadermiddlewares.pacing import runtime_for

            self.runtime = runtime_for(crawler)
        self.spider: Any = None
        self.frontier: Frontier[Request] = Frontier(
            self._admit,
            self._peek,
            self.config,
            spill=self._open_spill,
            encode=self._encode,
            decode=self._decode,
            on_drop=self._dropped,
        )
        self._spill_path: Path | None = None
        self._timer: Any = None
        self._timer_at = math.inf
        self._dropped_sites: set[str] = set()
        #: requests read back from the disk (for Scrapy's scheduler/dequeued/disk|memory stats)
        self._from_disk: weakref.WeakSet[Request] = weakref.WeakSet()
        #: the frontier's clock (monotonic seconds) and timer (scrapy.utils.asyncio.call_later); tests
        #: inject their own
        self.clock = time.monotonic
        self.call_later: Any = call_later

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # --- Scrapy's scheduler interface ---------------------------------------------------------

    def open(self, spider: Any) -> Any:
        self.spider = spider
        if self.runtime is not None and not self.runtime.middleware:
            logger.warning(
                "The pacing middleware is not in DOWNLOADER_MIDDLEWARES: the frontier keeps requests per site "
                "but cannot pace them (nothing would release their slots)"
            )
            self.runtime = None
        if self.runtime is not None:
            self.runtime.frontier = self
        if self.jobdir and (Path(self.jobdir) / JOBDIR_FILE).exists():
            n = self.frontier.load(self.clock())
            if n:
                logger.info("Resuming the frontier from %s: %d requests waiting", self.jobdir, n)
        return self.df.open()

    def close(self, reason: str) -> Any:
        self._cancel_timer()
        if self.jobdir:
            lost = self.frontier.persist() if len(self.frontier) else 0
            if lost:
                self.stats.inc_value("imagecrawl/frontier/unserializable", lost)
                logger.error(
                    "%d queued requests could not be saved in JOBDIR %s (their callback or errback is not a "
                    "method of the spider, or their meta cannot be pickled): they are lost to the resume",
                    lost,
                    self.jobdir,
                )
            self.frontier.close(remove=False)
        else:
            self.frontier.close(remove=True)
        if self.runtime is not None and getattr(self.runtime, "frontier", None) is self:
            self.runtime.frontier = None
        self.stats.set_value("imagecrawl/frontier/spilled", self.frontier.spilled)
        return self.df.close(reason)

    def has_pending_requests(self) -> bool:
        return len(self.frontier) > 0

    def __len__(self) -> int:
        return len(self.frontier)

    def wants_more(self) -> bool:
        """Read-ahead: whether the spider should hand over more start requests now (the urls spider
        asks). The frontier takes any number (they wait on disk); this keeps reading while the sites'
        next requests are few, so one site with a long run of the list does not hold the others back."""
        return self.frontier.wants_more()

    def enqueue_request(self, request: Request) -> bool:
        m = request.meta
        old_key = m.pop(meta.FRONTIER_KEY, None)
        key: Key | None = None
        if m.get(meta.PACING_GRANTED) is True and self.runtime is not None:
            # It came back without reaching the pacing middleware's response side: its slot is free, and
            # it takes its old place in its site's queue.
            m.pop(meta.PACING_GRANTED, None)
            self.runtime.release_unsent(self.runtime.site_of(request))
            if isinstance(old_key, list | tuple) and len(old_key) == 3:
                key = (int(old_key[0]), int(old_key[1]), int(old_key[2]))
        if m.pop(meta.FIRST_CONTACT, None):
            m.pop("download_timeout", None)
        if not request.dont_filter and self.df.request_seen(request):
            self.df.log(request, self.spider)
            return False
        site = self._site_of(request)
        now = self.clock()
        due = None
        not_before = m.get(meta.NOT_BEFORE)
        if not_before is not None:
            due = now + (float(not_before) - time.time())
        spilled = self.frontier.spilled
        if not self.frontier.push(site, key or self._key(request), request, now, due):
            self._dropped(site, 1, self.frontier.sites[site].dropped or "given up")
            return False
        self.stats.inc_value(
            "scheduler/enqueued/disk" if self.frontier.spilled > spilled else "scheduler/enqueued/memory"
        )
        self.stats.inc_value("scheduler/enqueued")
        return True

    def next_request(self) -> Request | None:
        now = self.clock()
        if now >= self._next_forget:
            self._forget(now)
        got = self.frontier.pop(now)
        if got is None:
            self._arm(self.frontier.next_wake(), now)
            return None
        site, request = got
        m = request.meta
        if site != UNPACED and self.runtime is not None:
            m[meta.PACING_GRANTED] = True
            m[meta.SENT_AT] = now
            if self.frontier.popped_key is not None:
                m[meta.FRONTIER_KEY] = list(self.frontier.popped_key)
            if self.first_contact_timeout and "download_timeout" not in m and not self.runtime.gate.answered(site):
                m["download_timeout"] = self.first_contact_timeout
                m[meta.FIRST_CONTACT] = True
        self.stats.inc_value("scheduler/dequeued/disk" if request in self._from_disk else "scheduler/dequeued/memory")
        self.stats.inc_value("scheduler/dequeued")
        return request

    def _forget(self, now: float) -> None:
        """Every few seconds: compact the pacing state of settled sites to their learned rate, drop what
        was idle for ``pacing_forget_idle_seconds`` and the queues of sites with nothing queued
        (bounded memory over a list of many sites, each passed through once)."""
        idle = self.forget_idle if self.forget_idle > 0 else math.inf
        self._next_forget = now + max(1.0, min(COMPACT_AFTER_SECONDS / 2, idle / 10))
        if self.runtime is not None:
            n = self.runtime.gate.forget_idle(now, idle, self.frontier.holds)
            if n:
                self.stats.inc_value("imagecrawl/pacing/forgotten", n)
            self.runtime.forget(self.frontier.holds)
        self.frontier.forget_empty()

    # --- the gate -----------------------------------------------------------------------------

    def _site_of(self, request: Request) -> str:
        if request.meta.get(meta.DONT_PACE) or not request.url.startswith(("http://", "https://")):
            return UNPACED
        if self.runtime is not None:
            return str(self.runtime.site_of(request))
        return urlparse_cached(request).hostname or UNPACED

    def _admit(self, site: str, now: float) -> float | None:
        rt = self.runtime
        if site == UNPACED or rt is None:
            return 0.0
        wait = float(rt.gate.acquire(site, now))
        rt.flush()
        if wait == 0 or math.isinf(wait):
            return wait
        state = rt.gate.sites.get(site)
        if state is not None and state.held_by_window:
            return None
        return wait

    def _peek(self, site: str, now: float) -> float:
        """When the site (which has more requests queued) may send again. A wait here is the site's
        rate holding its requests back: its controller is told so (it grows the rate only then)."""
        if site == UNPACED or self.runtime is None:
            return 0.0
        gate = self.runtime.gate
        wait = float(gate.peek_wait(site, now))
        if wait > 0:
            state = gate.sites.get(site)
            if state is not None:
                state.controller.rate_limited = True
        return wait

    def released(self, site: str) -> None:
        """A request of ``site`` ended (the pacing middleware tells): a site waiting for a free slot
        may go now."""
        now = self.clock()
        self.frontier.released(site, now)
        wake = self.frontier.next_wake()
        if wake is not None and wake <= now:
            wake_engine(self._engine())

    def _dropped(self, site: str, n: int, reason: str) -> None:
        if reason == "given up":
            reason = "dead_site" if self.runtime is not None and self.runtime.gate.dead(site) else "banned"
        self.stats.inc_value(f"imagecrawl/frontier/dropped/{reason}", n)
        if reason == "banned":
            self.stats.inc_value("imagecrawl/bans/dropped", n)
        if site not in self._dropped_sites:
            self._dropped_sites.add(site)
            if reason == "dead_site":
                self.stats.inc_value("imagecrawl/frontier/dead_sites")
                logger.warning("Site %s does not answer: dropping its %d queued requests (and any later)", site, n)
            else:
                logger.warning("Site %s: dropping its %d queued requests (%s)", site, n, reason)

    # --- order and the disk -------------------------------------------------------------------

    def _key(self, request: Request) -> Key:
        seq = self.frontier.tick
        start = bool(request.meta.get("is_start_request"))
        # Scrapy: lower -priority first; a priority's other requests before its start requests;
        # start requests FIFO, the others as SCHEDULER_MEMORY_QUEUE says (LIFO by default).
        return (-request.priority, 1 if start else 0, -seq if self.lifo and not start else seq)

    def _encode(self, request: Request) -> bytes | None:
        try:
            return pickle.dumps(request.to_dict(spider=self.spider), protocol=5)
        except Exception as exc:  # a callback that is no spider method, meta that does not pickle
            self.stats.inc_value("imagecrawl/frontier/unspillable")
            logger.debug("Request %s stays in memory: %s", request, exc)
            return None

    def _decode(self, data: bytes) -> Request | None:
        try:
            request = request_from_dict(pickle.loads(data), spider=self.spider)
        except Exception as exc:
            logger.error("Dropping a request the frontier file cannot restore: %s", exc)
            return None
        self._from_disk.add(request)
        return request

    def _open_spill(self) -> SpillStore:
        if self.jobdir:
            path = Path(self.jobdir) / JOBDIR_FILE
        else:
            settings = self.crawler.settings
            folder = state_dir_for(str(settings.get("IMAGECRAWL_STORE")), settings.get("IMAGECRAWL_STATE_DIR"))
            folder = folder / "frontier"
            _remove_stale_spills(folder)
            path = folder / f"spill-{_host()}-{os.getpid()}-{secrets.token_hex(3)}.sqlite3"
            logger.info("More than %d requests queued: the rest wait in %s", self.config.memory_limit, path)
        self._spill_path = path
        return SpillStore(path)


def _host() -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in socket.gethostname().split(".")[0])[:32]


def _remove_stale_spills(folder: Path) -> None:
    """Spill files of this host's processes that are gone (a crawl killed before it could remove its own)."""
    if not folder.is_dir():
        return
    prefix = f"spill-{_host()}-"
    for path in folder.glob(f"{prefix}*.sqlite3"):
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            continue


#: requests.seen: each fingerprint after its length in 2 big-endian bytes (Scrapy's format)
_SEEN_SIZE_BYTES = 2


class CompactDupeFilter(RFPDupeFilter):
    """Scrapy's ``RFPDupeFilter`` whose seen-set takes 16 bytes a request instead of about 90
    (:class:`imagecrawl.pacing.seen.FingerprintSet`). Everything else is Scrapy's: the fingerprinter
    (``REQUEST_FINGERPRINTER_CLASS``), the log lines and stat, and JOBDIR's ``requests.seen`` (the same
    format, so a job started with either filter resumes with the other)."""

    def __init__(
        self,
        path: str | None = None,
        debug: bool = False,
        *,
        fingerprinter: RequestFingerprinterProtocol | None = None,
    ) -> None:
        super().__init__(None, debug, fingerprinter=fingerprinter)
        self.seen = FingerprintSet()
        if path:
            self.file = Path(path, "requests.seen").open("a+b")  # noqa: SIM115 (closed by close(), as Scrapy's)
            self.file.seek(0)
            self._load(self.file.read())

    def _load(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos + _SEEN_SIZE_BYTES <= size:
            n = int.from_bytes(data[pos : pos + _SEEN_SIZE_BYTES], "big")
            pos += _SEEN_SIZE_BYTES
            if pos + n > size:  # cut short by an unclean stop
                break
            self.seen.add(key_of(data[pos : pos + n]))
            pos += n
        self.seen.merge()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(
            job_dir(crawler.settings),
            crawler.settings.getbool("DUPEFILTER_DEBUG"),
            fingerprinter=crawler.request_fingerprinter,
        )

    def request_seen(self, request: Request) -> bool:
        fp = self._fingerprint(request)
        key = key_of(fp)
        if key in self.seen:
            return True
        self.seen.add(key)
        if self.file:
            self.file.write(len(fp).to_bytes(_SEEN_SIZE_BYTES, "big") + fp)
        return False
