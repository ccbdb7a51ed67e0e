"""Micro-benchmarks of two per-request costs: the pacing gate and the dedupe ledger, in CPU seconds.

    uv run python -m benchmarks.micro_pacing_ledger [--requests 50000] [--claims 20000] [--repeats 3]

- gate: the pure ``InProcessGate`` (acquire, release, feedback for one site, caps lifted), then the whole
  ``PacingMiddleware`` path (``process_request`` on the event loop, ``process_response``) with a crawler
  built from the project settings, spread over 2000 sites so that none waits: requests decided per CPU
  second;
- ledger: ``Ledger.reserve`` (a claim: the SQLite write of one item that passed dedupe, one transaction
  each), the same claims as the dedupe pipeline makes them (64 items in flight, batched by the
  ``LedgerWorker`` on its own thread), and the known-image lookups (``has_id``, ``has_url``) on a ledger
  in a temporary folder: operations per CPU second (all threads of the process).

CPU time (``time.process_time``) of this process only, median of ``--repeats`` runs. The machine's load is
printed before each phase, with a warning above 0.5 (a loaded machine slows even CPU-time figures).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scrapy import Request
from scrapy.http import Response

from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.pacing import AimdConfig, Feedback, InProcessGate, Signal
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware
from tests.crawlers import make_crawler

LIFTED = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": 1e9,
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 1e9,
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 64,
}


def load(phase: str) -> None:
    one, _, _ = os.getloadavg()
    warn = "  WARNING: load above 0.5, figures are noisy" if one > 0.5 else ""
    print(f"[{phase}] load average {one:.2f}{warn}", flush=True)


def cpu(fn: Callable[[], int]) -> float:
    """Operations per CPU second of ``fn`` (which returns how many it did)."""
    start = time.process_time()
    n = fn()
    return n / max(time.process_time() - start, 1e-9)


def gate_pure(n: int) -> int:
    gate = InProcessGate(aimd=AimdConfig(start_rate=1e9, max_rate=1e9, start_concurrency=64, max_concurrency=64))
    now = 1000.0
    for _ in range(n):
        now += 0.005  # 200 requests/s to one site
        if gate.acquire("s", now) == 0:
            gate.release("s", now, now)
            gate.feedback("s", Feedback(Signal.OK, now, 0.002, None), now)
        gate.drain_events()
    return n


def middleware() -> PacingMiddleware:
    """The middleware of a crawler built from the project settings (built outside the timed part:
    building a crawler imports and compiles Scrapy's components, which is not the per-request cost)."""
    crawler = make_crawler(**LIFTED)
    crawler.stats.open_spider()
    return PacingMiddleware.from_crawler(crawler)


def gate_middleware(mw: PacingMiddleware, n: int) -> int:
    # spread over sites so that no request waits (this measures the deciding, not the pacing)
    requests = [Request(f"http://s{i % 2000}.test/{i}.png") for i in range(n)]

    async def run() -> None:
        for request in requests:
            await mw.process_request(request)
            mw.process_response(request, Response(request.url, status=200, request=request))

    asyncio.run(run())
    return n


def ledger_claims(n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite3", owner="bench")
        for i in range(n):
            sha = hashlib.sha256(str(i).encode()).hexdigest()
            ledger.reserve(sha, f"urls:{i}", f"http://127.0.0.1/{i}.png", i)
        ledger.close()
    return n


def ledger_claims_batched(n: int, in_flight: int = 64) -> int:
    """Claims as the dedupe pipeline makes them: ``in_flight`` items at a time (Scrapy's concurrent
    items), through the ledger's batching worker (its own thread and connection)."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite3", owner="bench")
        worker = ledger.worker()

        async def run() -> None:
            for start in range(0, n, in_flight):
                claims = []
                for i in range(start, min(n, start + in_flight)):
                    sha = hashlib.sha256(str(i).encode()).hexdigest()
                    claims.append(worker.reserve(sha, f"urls:{i}", f"http://127.0.0.1/{i}.png", i))
                await asyncio.gather(*claims)

        asyncio.run(run())
        ledger.close()
    return n


def ledger_lookups(n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite3", owner="bench")
        for i in range(n):
            ledger.has_id(f"civitai:{i}")
            ledger.has_url(f"http://127.0.0.1/{i}.png")
        ledger.close()
    return 2 * n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--claims", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    mw = middleware()
    phases: list[tuple[str, Callable[[], int]]] = [
        ("gate (pure InProcessGate)", lambda: gate_pure(args.requests)),
        ("gate (PacingMiddleware request+response)", lambda: gate_middleware(mw, args.requests // 5)),
        ("ledger claims (reserve, one transaction each)", lambda: ledger_claims(args.claims)),
        ("ledger claims (LedgerWorker, 64 in flight)", lambda: ledger_claims_batched(args.claims)),
        ("ledger known-image lookups", lambda: ledger_lookups(args.claims)),
    ]
    results: dict[str, list[float]] = {name: [] for name, _ in phases}
    for r in range(args.repeats):  # phases interleaved, repeated
        for name, fn in phases:
            load(f"{name} #{r + 1}")
            results[name].append(cpu(fn))
    print()
    print("| phase | median ops per CPU second | runs |")
    print("|---|---:|---|")
    for name, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):,.0f} | {runs} |")


if __name__ == "__main__":
    main()
