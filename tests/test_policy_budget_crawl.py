"""A robots.txt of tens of megabytes, end to end: a real crawl against a loopback server that streams
it (plain, and gzip-encoded although the crawler asked for none) reads its first
``IMAGECRAWL_TUNING['policy_max_bytes']`` and hangs up; the rules in that part apply, the ones after it do not,
the crawl's peak memory barely moves and the server sends only a small part of the file."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_crawl
from tests.sandbox.payloads import optout_png

pytestmark = pytest.mark.e2e

ROBOTS_MB = 40
HEAD = b"User-agent: *\nDisallow: /blocked/\n"
# what comes after the budget: a rule the crawler must never read
TAIL = b"\nUser-agent: *\nDisallow: /\n"
PAD_LINE = b"# " + b"x" * 60 + b"\n"


def robots_chunks() -> Iterator[bytes]:
    yield HEAD
    chunk = PAD_LINE * 1024
    for _ in range(ROBOTS_MB * 1024 * 1024 // len(chunk)):
        yield chunk
    yield TAIL


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, gzip_robots: bool) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.gzip_robots = gzip_robots
        self.hits: list[str] = []
        self.robots_sent = 0
        self.robots_seconds = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits.append(self.path)
        if self.path == "/robots.txt":
            self._robots()
        elif self.path == "/gallery/":
            links = "".join(f'<img src="/{d}/{n}.png">' for d in ("open", "blocked") for n in range(3))
            self._send(f"<html><body>{links}</body></html>".encode(), "text/html")
        elif self.path.endswith(".png"):
            self._send(optout_png(self.path), "image/png")
        else:
            self.send_error(404)

    def _robots(self) -> None:
        started = time.monotonic()
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if self.server.gzip_robots:
                # a 40 MB file in a few hundred KB, sent although the crawler asked for "identity"
                body = gzip.compress(b"".join(robots_chunks()), compresslevel=9)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(0, len(body), 65536):
                    self.wfile.write(body[i : i + 65536])
                    sent += min(65536, len(body) - i)
            else:
                self.send_header("Content-Length", str(len(HEAD) + len(TAIL) + ROBOTS_MB * 1024 * 1024))
                self.end_headers()
                for chunk in robots_chunks():
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except OSError:  # the crawler hung up: what it wanted is in
            self.close_connection = True
        finally:
            with self.server.lock:
                self.server.robots_sent += sent
                self.server.robots_seconds += time.monotonic() - started


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(gzip_robots=request.param)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("server", [False, True], ids=["plain", "gzip"], indirect=True)
def test_a_huge_robots_txt_is_read_only_up_to_the_budget(server: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_crawl(
        "site",
        store=tmp_path / "store",
        args={"start": server.url + "/gallery/"},
        settings={
            "SPIDER_MODULES": "tests.sitespider",
            "IMAGECRAWL_CONTACT": "ops@example.org",
            "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.1/32",
            "MEMUSAGE_ENABLED": "True",
            "MEMUSAGE_CHECK_INTERVAL_SECONDS": "0.2",
        },
        timeout=120,
    )
    elapsed = time.monotonic() - started
    stats = result.stats
    # the rules before the cut apply, the "Disallow: /" after it was never read
    fetched = {p for p in server.hits if p.endswith(".png")}
    assert fetched == {f"/open/{n}.png" for n in range(3)}, server.hits
    assert stats["imagecrawl/optout/robots_txt"] == 3
    assert stats["imagecrawl/optout/policy_file_truncated"] == 1
    assert "imagecrawl/optout/robots_txt_unreachable" not in stats
    assert server.hits.count("/robots.txt") == 1
    if not server.gzip_robots:
        # stopped at 512 KiB: what the server got into the socket before the hang-up is a small part
        assert server.robots_sent < 16 * 1024 * 1024, server.robots_sent
    # memory: a 40 MB body parsed whole cost gigabytes; within the budget it is noise
    grown = stats["memusage/max"] - stats["memusage/startup"]
    assert grown < 120 * 1024 * 1024, grown
    assert elapsed < 60, elapsed
