"""The pacing gate and its controller against a sandbox site, in virtual time (no clock, no server).

:func:`short_crawl` sends ``n`` requests through an :class:`~imagecrawl.pacing.InProcessGate` to one site
whose admission is the sandbox's own (:class:`tests.sandbox.misbehave.Misbehaviour`, driven by a virtual
clock): a token bucket of ``capacity`` req/s and ``burst`` tokens, past which it answers 429, with
``Retry-After`` on ``retry_after_share`` of them and 429 to everything inside the window it announced.
An admitted request is answered after ``latency`` seconds plus ``per_queued`` per request in progress;
a request reaches the site up to ``noise`` seconds after the gate let it go (the network, a busy event
loop). A 429 is retried as the retry middleware does: once the pause it announced is over (up to 0.5 s
later), at its turn at the gate. The request log it keeps has the sandbox's fields, so it is scored as
``benchmarks/politeness.py`` scores a real crawl (:mod:`tests.politeness_score`).
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from imagecrawl.pacing import AimdConfig, Feedback, InProcessGate, Signal
from tests.politeness_score import SHORT_SETTLE, START_UP_SETTLE, Row, measure_short
from tests.sandbox.config import MisbehaveConfig
from tests.sandbox.misbehave import Misbehaviour, max_rate_per_second

#: the imagecrawl scenario of benchmarks/politeness_crawl.py: caps raised far above the hidden capacity
START_RATE = 2.0
MAX_RATE = 200.0
MAX_CONCURRENCY = 16


@dataclass
class Outcome:
    goodput: float  # 200s per second over the whole crawl, / capacity
    share_429: float
    peak_after_5s: float  # most requests within any 1 s, after the first five
    inside_retry_after: float
    seconds: float
    #: most requests within any 1 s before the first 429 and the 2 s after it (the start-up), / capacity
    startup_peak: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)


def crawl_log(
    capacity: float,
    burst: float,
    retry_after: float,
    retry_after_share: float,
    n: int,
    *,
    latency: float = 0.03,
    per_queued: float = 0.01,
    noise: float = 0.003,
    start_rate: float = START_RATE,
    max_rate: float = MAX_RATE,
    max_concurrency: int = MAX_CONCURRENCY,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The site's request log of a crawl of ``n`` images (``t``: arrival, ``dur``, ``status``,
    ``retry_after``), in virtual seconds from 0."""
    rng = random.Random(seed)
    gate = InProcessGate(
        aimd=AimdConfig(start_rate=start_rate, max_rate=max_rate, max_concurrency=max_concurrency),
        rng=random.Random(seed),
    )
    site = Misbehaviour(
        MisbehaveConfig(
            capacity=capacity,
            burst=burst,
            retry_after=retry_after,
            retry_after_share=retry_after_share,
            latency=latency,
            latency_per_queued=per_queued,
        )
    )
    now, ok, queued, in_flight = 0.0, 0, n, 0
    # (time, order, kind, payload): "arrive" at the site, "answer" back at the crawler
    events: list[tuple[float, int, str, tuple[float, int, float | None]]] = []
    retries: list[float] = []
    log: list[dict[str, Any]] = []
    order = itertools.count()
    limit = 100 * n / capacity + 60
    while ok < n and now < limit:
        while events and events[0][0] <= now:
            t, _, kind, (sent, status, pause) = heapq.heappop(events)
            if kind == "arrive":
                answer = site.admit("site", t)
                if answer is None:
                    took = latency + per_queued * in_flight
                    status, pause = 200, None
                else:
                    took, status = 0.002, answer.status
                    header = answer.headers.get("Retry-After")
                    pause = float(header) if header else None
                log.append({"t": t, "dur": took, "status": status, "retry_after": pause})
                heapq.heappush(events, (t + took, next(order), "answer", (sent, status, pause)))
                continue
            in_flight -= 1
            gate.release("site", sent, t)
            if status == 200:
                ok += 1
                gate.feedback("site", Feedback(Signal.OK, sent, t - sent), t)
            else:
                gate.feedback("site", Feedback(Signal.THROTTLED, sent, t - sent, pause), t)
                heapq.heappush(retries, t + (pause or 0.0) + rng.uniform(0, 0.5))
        while retries and retries[0] <= now:
            heapq.heappop(retries)
            queued += 1
        wait = gate.acquire("site", now) if queued else 0.25
        if queued and wait == 0:
            queued -= 1
            in_flight += 1
            heapq.heappush(events, (now + rng.uniform(0, noise), next(order), "arrive", (now, 0, None)))
            continue
        due = [now + min(wait, 0.25)] + [q[0][0] if q is events else q[0] for q in (events, retries) if q]
        now = max(now + 1e-6, min(due))
    return log


def startup_peak(records: list[dict[str, Any]]) -> int:
    """The most requests within any 1 s of the start-up: until 2 s after the site's first 429 (the
    first five seconds if it never answered 429), as ``benchmarks/politeness.py`` takes it."""
    records = sorted(records, key=lambda r: float(r["t"]))
    t0 = float(records[0]["t"])
    first_429 = next((float(r["t"]) for r in records if r["status"] == 429), None)
    settled = t0 + SHORT_SETTLE if first_429 is None else first_429 + START_UP_SETTLE
    return max_rate_per_second([float(r["t"]) for r in records if float(r["t"]) < settled])


def score(records: list[dict[str, Any]], capacity: float) -> Outcome:
    """What ``benchmarks/politeness.py`` reports for a short crawl, and its start-up peak."""
    row: Row = measure_short("sim", records, capacity)
    peak = startup_peak(records)
    end = max(r["t"] + r["dur"] for r in records)
    return Outcome(
        goodput=row.goodput,
        share_429=row.share_429,
        peak_after_5s=row.max_1s_late,
        inside_retry_after=row.inside_retry_after,
        seconds=end - records[0]["t"],
        startup_peak=peak / capacity,
        records=records,
    )


def short_crawl(
    capacity: float,
    burst: float,
    retry_after: float,
    retry_after_share: float,
    n: int,
    **kwargs: Any,
) -> Outcome:
    return score(crawl_log(capacity, burst, retry_after, retry_after_share, n, **kwargs), capacity)
