"""The pacing gate and its controller against a token-bucket site, in virtual time (no clock, no server).

:func:`short_crawl` sends ``n`` requests through an :class:`~imagecrawl.pacing.InProcessGate` to a site
of capacity ``capacity`` (a token bucket of ``burst`` tokens: a request that finds none gets 429, with
``Retry-After`` on ``retry_after_share`` of them, as the sandbox's ``--retry-after-share`` does), which
answers after ``latency`` seconds plus ``per_queued`` per request in progress; a 429 is retried once the
pause (or 0.2 s) is over. It returns what ``benchmarks/politeness.py`` reports for a short crawl.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass

from imagecrawl.pacing import AimdConfig, Feedback, InProcessGate, Signal
from tests.sandbox.misbehave import requests_inside_windows


@dataclass
class Outcome:
    goodput: float  # 200s per second over the whole crawl, / capacity
    share_429: float
    peak_after_5s: int  # most requests in one whole second, after the first five
    inside_retry_after: int
    seconds: float


def short_crawl(
    capacity: float,
    burst: float,
    retry_after: float,
    retry_after_share: float,
    n: int,
    *,
    latency: float = 0.03,
    per_queued: float = 0.01,
    start_rate: float = 2.0,
    max_rate: float = 200.0,
    max_concurrency: int = 16,
    seed: int = 0,
) -> Outcome:
    gate = InProcessGate(
        aimd=AimdConfig(start_rate=start_rate, max_rate=max_rate, max_concurrency=max_concurrency),
        rng=random.Random(seed),
    )
    tokens, refilled = float(burst), 0.0
    now, ok, queued, in_flight, throttled = 0.0, 0, n, 0, 0
    answers: list[tuple[float, int, tuple[float, int, float | None]]] = []
    retries: list[float] = []
    log: list[dict[str, float | int | None]] = []
    order = itertools.count()
    every = max(1, round(1 / retry_after_share))
    while ok < n and now < 100 * n / capacity + 60:
        while answers and answers[0][0] <= now:
            t, _, (sent, status, pause) = heapq.heappop(answers)
            in_flight -= 1
            gate.release("site", sent, t)
            if status == 200:
                ok += 1
                gate.feedback("site", Feedback(Signal.OK, sent, t - sent), t)
            else:
                gate.feedback("site", Feedback(Signal.THROTTLED, sent, t - sent, pause), t)
                heapq.heappush(retries, t + max(0.2, pause or 0.0))
        while retries and retries[0] <= now:
            heapq.heappop(retries)
            queued += 1
        wait = gate.acquire("site", now) if queued else 0.25
        if queued and wait == 0:
            queued -= 1
            tokens = min(float(burst), tokens + (now - refilled) * capacity)
            refilled = now
            pause: float | None = None
            if tokens >= 1:
                tokens -= 1
                status, took = 200, latency + per_queued * in_flight
            else:
                throttled += 1
                status, took = 429, 0.002
                pause = retry_after if (throttled - 1) % every == 0 else None
            in_flight += 1
            log.append({"t": now, "dur": took, "status": status, "retry_after": pause})
            heapq.heappush(answers, (now + took, next(order), (now, status, pause)))
            continue
        due = [now + min(wait, 0.25)] + [q[0][0] if q is answers else q[0] for q in (answers, retries) if q]
        now = max(now + 1e-6, min(due))
    first = float(log[0]["t"])  # type: ignore[arg-type]
    per_second = Counter(int(float(r["t"]) - first) for r in log if float(r["t"]) >= first + 5)  # type: ignore[arg-type]
    return Outcome(
        goodput=ok / (now - first) / capacity,
        share_429=throttled / len(log),
        peak_after_5s=max(per_second.values(), default=0),
        inside_retry_after=requests_inside_windows(log),  # type: ignore[arg-type]
        seconds=now - first,
    )
