"""Helpers for the progress/report tests: a loopback image site that pushes back (429 + Retry-After on
the first request of every image, 403 under /ban/), and a pacing component that publishes the
pacing snapshot the monitor reads (published in the crawl context; see imagecrawl/report/extensions/monitor.py)."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from PIL import Image
from scrapy.crawler import Crawler

from imagecrawl.storage.context import crawl_context

THROTTLED_IMAGES = 6
BANNED_IMAGES = 2
RETRY_AFTER_SECONDS = 1


def png(n: int) -> bytes:
    """A distinct noise image per ``n``: neither an exact nor a near (pHash) duplicate of another."""
    size = (32 + n, 24 + n)
    img = Image.frombytes("RGB", size, random.Random(n).randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    seen: set[str]
    lock: threading.Lock

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path.startswith("/ban/"):
            self._send(403, b"blocked", {"Content-Type": "text/plain"})
            return
        if not path.startswith("/img/"):
            self._send(404, b"", {})
            return
        with self.lock:
            first = path not in self.seen
            self.seen.add(path)
        if first:
            self._send(429, b"slow down", {"Retry-After": str(RETRY_AFTER_SECONDS), "Content-Type": "text/plain"})
            return
        n = int(path.rsplit("/", 1)[1].split(".")[0])
        self._send(200, png(n), {"Content-Type": "image/png"})


@contextmanager
def pushback_site() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: ``/img/<n>.png`` answers 429 once, then the image; ``/ban/*`` 403."""
    handler = type("Handler", (_Handler,), {"seen": set(), "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class PacingHook:
    """Stands in for the pacing middleware's published state: the site named by the setting
    ``TEST_PACING_SITE`` is cooling down at 4 requests/s for the whole crawl."""

    def __init__(self, site: str) -> None:
        self.site = site

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        hook = cls(crawler.settings.get("TEST_PACING_SITE", ""))
        crawl_context(crawler).snapshot_providers.append(hook)
        return hook

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {self.site: {"rate": 4.0, "state": "cooldown", "paused_until": None}}
