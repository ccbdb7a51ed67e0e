"""robots.txt with every waiting request getting the parser.

Scrapy 2.19's ``RobotsTxtMiddleware.robot_parser`` makes every request that arrives while a host's
robots.txt is still downloading await the same Deferred through ``Deferred.asFuture``, which consumes
the result: only the first waiter gets the parser, the others get ``None``, which the middleware treats
as "allowed". So the first burst of requests to a new host ignored robots.txt. Here each waiter gets its
own Deferred chained on the shared one, and the result is passed on to the next.
"""

from __future__ import annotations

from typing import Any

from scrapy import Request
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware as ScrapyRobotsTxtMiddleware
from scrapy.robotstxt import RobotParser
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred


class RobotsTxtMiddleware(ScrapyRobotsTxtMiddleware):
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
