"""Peak memory of the site-aware frontier over a huge URL list (no network).

    uv run python -m benchmarks.frontier_memory                       # 2,000,000 URLs over 100,000 hosts
    uv run python -m benchmarks.frontier_memory --urls 20000 --hosts 1000 --memory-requests 2000  # a smoke run

The ``urls`` spider's own requests (``ImageSpider.image_request``, as ``start()`` builds them) go through
the real ``FrontierScheduler`` and pacing gate exactly as the engine would drive them: the list is read
while the frontier ``wants_more()`` (its read-ahead), and between reads the ready sites are served on a
simulated clock, each request answered at once with a 200. By default the first third of the list is one
site that allows 2 requests/s (``--slow-share``): its requests pile up and wait on disk
(``IMAGECRAWL_TUNING['frontier_memory_requests']``) while the reading goes on to the other sites. The list is
generated on the fly, grouped by host (hosts are never contacted). Prints one JSON line: URLs, hosts,
peak RSS (MB), requests that waited on disk, the most held in memory, the most sites with their full
pacing state at once and those kept as a learned rate only at the end (imagecrawl.pacing.gate compacts
settled sites), the duplicate filter's seen-set, the simulated crawl time, and the CPU seconds.
Goal: peak RSS <= 500 MB at 2M URLs / 100k hosts.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from scrapy import Request

from imagecrawl import meta
from imagecrawl.pacing import Feedback, Signal
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware
from imagecrawl.pacing.scheduler import FrontierScheduler
from imagecrawl.records import SourceHints
from spiders.urls import UrlsSpider
from tests.crawlers import make_crawler

STEP = 0.05  # simulated seconds between two turns of the engine


def rows(urls: int, hosts: int, slow_share: float) -> Iterator[str]:
    """The list, grouped by host: the slow host's run first, then the others in order."""
    slow = int(urls * slow_share)
    for i in range(slow):
        yield f"http://slow.example/img/{i}.png"
    rest = urls - slow
    per_host, extra = divmod(rest, hosts)
    for h in range(hosts):
        for i in range(per_host + (1 if h < extra else 0)):
            yield f"http://h{h}.example/img/{i}.png"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--urls", type=int, default=2_000_000)
    p.add_argument("--hosts", type=int, default=100_000)
    p.add_argument("--slow-share", type=float, default=1 / 3, help="share of the list on one slow site")
    p.add_argument("--memory-requests", type=int, default=None, help="IMAGECRAWL_TUNING['frontier_memory_requests']")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="frontier-bench-"))
    listing = tmp / "list.txt"
    listing.write_text("http://slow.example/x.png\n")  # the spider checks its input exists
    settings = {"IMAGECRAWL_STORE": str(tmp / "store"), "IMAGECRAWL_TUNING": {"pacing_jitter": 0}}
    if args.memory_requests:
        settings["IMAGECRAWL_TUNING"] = {"pacing_jitter": 0, "frontier_memory_requests": args.memory_requests}
    crawler = make_crawler(UrlsSpider, **settings)
    spider = UrlsSpider.from_crawler(crawler, input=str(listing))
    crawler.spider = spider
    crawler.stats.open_spider()
    PacingMiddleware.from_crawler(crawler)  # the engine builds the downloader before the scheduler
    sched = FrontierScheduler.from_crawler(crawler)
    clock = [0.0]
    sched.clock = lambda: clock[0]
    sched.call_later = lambda delay, func: type("H", (), {"cancel": lambda self: None})()
    sched.open(spider)
    gate = sched.runtime.gate

    served = 0
    most_in_memory = 0
    most_sites_full = 0

    def turn() -> None:
        nonlocal served, most_in_memory, most_sites_full
        clock[0] += STEP
        now = clock[0]
        while (request := sched.next_request()) is not None:
            site = request.meta[meta.SITE]
            gate.release(site, now, now)
            gate.feedback(site, Feedback(Signal.OK, now, 0.02), now)
            sched.released(site)
            served += 1
        most_in_memory = max(most_in_memory, sched.frontier.in_memory)
        most_sites_full = max(most_sites_full, len(gate.sites))

    cpu0, wall0 = time.process_time(), time.monotonic()
    read = 0
    for url in rows(args.urls, args.hosts, args.slow_share):
        while not sched.wants_more():
            turn()
        hints = SourceHints(source="urls", prompt=None, origin="input", params={"input_row": read})
        request: Request = spider.image_request(url, hints)
        request.meta["is_start_request"] = True
        sched.enqueue_request(request)
        read += 1
        if read % 1000 == 0:
            turn()
    read_done = clock[0]
    while sched.has_pending_requests() and clock[0] < read_done + 10:  # serve what is left for a while
        turn()
    result = {
        "urls": args.urls,
        "hosts": args.hosts,
        "read": read,
        "served": served,
        "left": len(sched),
        "peak_rss_mb": round(rss_mb(), 1),
        "spilled": sched.frontier.spilled,
        "most_in_memory": most_in_memory,
        "most_sites_full_state": most_sites_full,
        "sites_learned_rate_only": len(getattr(gate, "learned", ())),
        "seen_set_mb": round(getattr(getattr(sched.df, "seen", None), "nbytes", 0) / 1e6, 1),
        "simulated_seconds": round(clock[0], 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.monotonic() - wall0, 1),
    }
    sched.close("finished")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
