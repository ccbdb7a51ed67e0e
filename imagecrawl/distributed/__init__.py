"""Distributed crawling on Redis: many workers, one frontier, one dedupe index, one polite crawler.

Enabled by ``IMAGECRAWL_REDIS_URL`` (or Scrapy's ``REDIS_URL``); see docs/distributed.md.

- :mod:`.scheduler`: the shared site-aware frontier on scrapy-redis's scheduler and dupefilter (a queue
  per site, taken from only when the site's shared gate is open; Scrapy's request fingerprints; leased
  pops that come back when a worker dies).
- :mod:`.worker`: the per-process side of the leases (renewal, acknowledgement, liveness, idle rules).
- :mod:`.ledger`: the exact-dedupe ledger in Redis (atomic reservations).
- :mod:`.seeds`: pushing start URLs into a running crawl (``imagecrawl seed``).
"""
