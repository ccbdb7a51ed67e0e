"""Behaviour layers of the sandbox server (currently: the token-bucket rate limit)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from tests.sandbox.behaviours import TokenBucket, build_middlewares, make_rate_limit
from tests.sandbox.config import SandboxConfig
from tests.sandbox.testing import sandbox


def _status(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
            return resp.status, dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code == 429:
            assert json.loads(body) == {"error": "Too Many Requests"}
        return exc.code, dict(exc.headers.items())


def test_no_behaviours_by_default() -> None:
    assert build_middlewares(SandboxConfig()) == []


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, capacity=2.0, tokens=2.0, updated=0.0)
    assert b.take(0.0) == 0.0
    assert b.take(0.0) == 0.0
    assert b.take(0.0) == 0.5
    assert b.take(0.25) == 0.25  # half a token refilled, rejected requests take nothing
    assert b.take(0.5) == 0.0
    assert b.take(100.0) == 0.0
    assert b.tokens == 1.0  # capped at capacity


def test_rate_limit_middleware_with_fake_clock() -> None:
    now = [0.0]
    mw = make_rate_limit(SandboxConfig(rate_limit=1.0, burst=2), clock=lambda: now[0])
    assert mw is not None

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def call(path: str = "/gallery/") -> web.StreamResponse:
        return await mw(make_mocked_request("GET", path), ok)

    async def scenario() -> list[tuple[int, str | None]]:
        out = []
        for t, path in ((0.0, "/"), (0.0, "/"), (0.0, "/"), (0.0, "/robots.txt"), (0.4, "/"), (1.0, "/")):
            now[0] = t
            r = await call(path)
            out.append((r.status, r.headers.get("Retry-After")))
        return out

    assert asyncio.run(scenario()) == [
        (200, None),
        (200, None),
        (429, "1"),
        (200, None),
        (429, "1"),
        (200, None),
    ]


@pytest.mark.e2e
def test_rate_limit_over_http() -> None:
    with sandbox(items=3, extra_args=["--rate-limit", "0.2", "--burst", "3"]) as sb:
        statuses = [_status(sb.url("api/v1/images?limit=1")) for _ in range(5)]
        assert [s for s, _ in statuses] == [200, 200, 200, 429, 429]
        assert statuses[3][1]["Retry-After"] == "5"
        assert _status(sb.url("robots.txt"))[0] == 200
    with sandbox(items=3, extra_args=["--rate-limit", "0.2", "--burst", "1", "--no-retry-after"]) as sb:
        first, second = (_status(sb.url("gallery/")) for _ in range(2))
        assert first[0] == 200
        assert second[0] == 429 and "Retry-After" not in second[1]
