"""Bans against the sandbox, measured from the server's own request log: a banned site goes quiet
and sees only the probes; it recovers when a probe is healthy, is abandoned after the last failed
probe; a crawl whose only site is abandoned closes with reason ``banned``."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.crawlers import merge_settings

from .test_pacing_sandbox import crawl, gaps, sites

pytestmark = pytest.mark.e2e

BANS: dict[str, Any] = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": 5,
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 5,
    "IMAGECRAWL_TUNING": {"ban_burst": 3, "ban_soft_threshold": 3, "ban_cooldown_seconds": 1, "ban_max_probes": 3},
}
MARKER = "imagecrawl sandbox"  # every healthy sandbox index page has it; an empty gallery does not


def after(records: list[dict[str, Any]], t: float) -> list[dict[str, Any]]:
    return [r for r in records if r["t"] > t]


def first_ban_answer(records: list[dict[str, Any]], burst: int, status: int | None = None) -> float:
    """When the client could first know it was banned: the answer that completed ``burst``
    consecutive ban answers (1 for a challenge)."""
    run = 0
    for r in sorted(records, key=lambda r: r["t"]):
        banned = r["status"] == status if status is not None else r["status"] == 403
        run = run + 1 if banned else 0
        if run == burst:
            return float(r["t"] + r["dur"])
    raise AssertionError("the site never banned the crawler: the test proves nothing")


def assert_only_probes(records: list[dict[str, Any]], t_ban: float, probes: int) -> list[dict[str, Any]]:
    """After the ban: nothing but ``probes`` single requests, each after a cool-down twice as long."""
    later = after(records, t_ban + 0.05)  # requests already on the wire when the ban answer left
    assert len(later) == probes, [(round(r["t"] - t_ban, 2), r["status"]) for r in later]
    waits = gaps([{"t": t_ban}, *later])
    for k, wait in enumerate(waits):
        assert wait >= 0.95 * 2**k, waits  # 1 s, 2 s, 4 s ...
    return later


def test_bans_probes_recovery_and_abandon_next_to_a_healthy_site(tmp_path: Any) -> None:
    n = 24
    with sites(
        tmp_path,
        ("127.0.0.1", []),
        ("127.0.0.2", ["--ban-mode", "403", "--ban-rate", "3", "--ban-seconds", "2"]),
        ("127.0.0.3", ["--ban-mode", "challenge", "--ban-after", "3", "--ban-seconds", "1000"]),
        ("127.0.0.4", ["--ban-mode", "empty", "--ban-after", "3", "--ban-seconds", "1000"]),
    ) as (healthy, temporary, challenge, soft):
        result = crawl(
            tmp_path,
            [sb.url("?i={i}") for sb in (healthy, temporary, challenge, soft)],
            n,
            BANS,
            args={"marker": MARKER},
        )
        logs = [sb.requests() for sb in (healthy, temporary, challenge, soft)]
    stats = result.stats
    assert stats["finish_reason"] == "finished"  # one healthy site: not a banned crawl

    # the healthy site is not held up by the others' cool-downs
    assert [r["status"] for r in logs[0] if r["path"] == "/"] == [200] * n  # (+ robots.txt, opt-out files)
    times = [r["t"] for r in logs[0]]
    assert max(times) - min(times) < (n + 1) / 5 + 3

    # temporary 403 ban: quiet, probes until one is healthy, then every page in the end
    t_ban = first_ban_answer(logs[1], burst=3)
    later = sorted(after(logs[1], t_ban + 0.05), key=lambda r: r["t"])
    first_ok = next(i for i, r in enumerate(later) if r["status"] == 200)
    probes = later[: first_ok + 1]
    assert 1 <= len(probes) <= 3, probes
    for k, wait in enumerate(gaps([{"t": t_ban}, *probes])):
        assert wait >= 0.95 * 2**k
    # every page is fetched in the end, but for the lone 403s before the ban (they are the pages' answers)
    fetched = {r["query"] for r in logs[1] if r["status"] == 200}
    assert len(fetched & {f"i={i}" for i in range(n)}) >= n - 2
    assert stats["imagecrawl/bans/recovered"] >= 1

    # challenge page: banned at once, three probes 1 s, 2 s, 4 s apart, then abandoned
    t_challenge = first_ban_answer(logs[2], burst=1, status=403)
    assert_only_probes(logs[2], t_challenge, probes=3)

    # soft ban (200s without the healthy marker): the same after three empty pages
    empty = [r for r in logs[3] if r["path"] == "/" and r["bytes"] < 300]
    assert empty, "the sandbox never served an empty gallery"
    t_soft = sorted(r["t"] + r["dur"] for r in empty)[2]
    assert_only_probes(logs[3], t_soft, probes=3)

    assert stats["imagecrawl/bans/abandoned"] == 2
    assert stats["imagecrawl/bans/evidence/challenge"] >= 1
    assert stats["imagecrawl/bans/evidence/soft"] >= 3
    assert stats["imagecrawl/bans/evidence/403"] >= 3
    assert stats["imagecrawl/bans/dropped"] >= 2 * (n - 6)
    assert stats["imagecrawl/bans/banned"] >= 1 + 3 + 3


def test_a_crawl_whose_only_site_is_abandoned_closes_banned(tmp_path: Any) -> None:
    with sites(tmp_path, ("127.0.0.1", ["--ban-mode", "403", "--ban-after", "2", "--ban-seconds", "1000"])) as (sb,):
        result = crawl(
            tmp_path,
            [sb.url("?i={i}")],
            40,
            merge_settings(BANS, {"IMAGECRAWL_TUNING": {"ban_max_probes": 2}}),
            check=False,
        )
        records = sb.requests()
    assert result.stats["finish_reason"] == "banned", result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    t_ban = first_ban_answer(records, burst=3)
    assert_only_probes(records, t_ban, probes=2)
    assert len(records) == 2 + 3 + 2  # robots.txt and a page, the 403 burst, two probes
    assert result.stats["imagecrawl/bans/abandoned"] == 1
    statuses = [r["status"] for r in records]
    assert [k for k, _ in itertools.groupby(statuses)] == [200, 403]
