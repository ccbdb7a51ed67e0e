"""The request log (``--log FILE``): one JSON line per request, written by an aiohttp access logger
*after* each response has been sent, so it records what really went out."""

from __future__ import annotations

import json
import logging
import time as _time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tests.sandbox.config import BODY_BYTES_KEY, LOGFILE_KEY

logger = logging.getLogger(__name__)


def body_bytes_sent(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes written for ``response`` (headers excluded).

    Behaviours that stream, truncate or chunk their bodies should store the exact count in
    ``response[BODY_BYTES_KEY]``; otherwise it is derived from the plain response body, or, for
    other stream responses, from the writer's byte count minus the serialized header size."""
    if BODY_BYTES_KEY in response:
        return int(response[BODY_BYTES_KEY])
    if request.method == "HEAD":
        return 0
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    version = request.version
    head = f"HTTP/{version.major}.{version.minor} {response.status} {response.reason}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in response.headers.items()) + "\r\n"
    return max(0, response.body_length - len(head.encode("utf-8")))


class JsonLinesAccessLogger(AbstractAccessLogger):
    """Writes one JSON line per request, after the response has been sent."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not isinstance(request, web.Request):
            return
        fh = request.app[LOGFILE_KEY]
        if fh is None:
            return
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = {
            "t": round(_time.time() - time, 6),  # when the request started
            "dur": round(time, 6),
            "method": request.method,
            "path": request.path,
            "query": request.rel_url.raw_query_string,
            "status": response.status,
            "bytes": body_bytes_sent(request, response),
            "length": response.content_length,  # what the headers announced (None when not stated)
            "retry_after": response.headers.get("Retry-After"),  # as sent (None when not sent)
            "ua": request.headers.get("User-Agent", ""),
            "remote": peer[0] if peer else request.remote,
        }
        try:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        except (OSError, ValueError):  # closed during shutdown
            logger.debug("could not write request log line", exc_info=True)

    @property
    def enabled(self) -> bool:
        return True
