"""Test-only: a RobotsTxtMiddleware with the Scrapy 2.19 concurrent-waiter bug fixed.

Scrapy 2.19 ``RobotsTxtMiddleware.robot_parser`` makes every request that arrives while robots.txt is
still downloading ``await maybe_deferred_to_future(<the shared Deferred>)``. ``Deferred.asFuture``
*consumes* the result (the Deferred fires None for later callbacks), so only the first waiter gets the
parser; every other waiting request gets None, which ``process_request_2`` treats as "allowed": the
first burst of requests to a new host ignores robots.txt. (The refactor in scrapy/scrapy PR #6802
replaced a per-waiter Deferred by the shared one; its author noted the branch is not covered by tests.)

The fix: give each waiter its own Deferred chained on the shared one (what Scrapy did before). This
module exists to prove the fix in ``tests/test_spiders_urls.py``; the real one belongs with the
opt-out middlewares.
"""

from __future__ import annotations

from typing import Any

from scrapy import Request
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.robotstxt import RobotParser
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred


class FixedRobotsTxtMiddleware(RobotsTxtMiddleware):
    async def robot_parser(self, request: Request) -> RobotParser | None:
        parser = self._parsers.get(urlparse_cached(request).netloc)
        if isinstance(parser, Deferred):
            waiter: Deferred[RobotParser | None] = Deferred()

            def relay(result: Any) -> Any:
                waiter.callback(result)
                return result  # keep the result for the next waiter

            parser.addCallback(relay)
            return await maybe_deferred_to_future(waiter)
        return await super().robot_parser(request)
