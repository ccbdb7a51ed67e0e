"""The politeness benchmark's figures from a request log built by hand: start-up peak, seconds above
1.25 C after warm-up, announced Retry-After windows, the goals and the medians over repeats."""

from __future__ import annotations

from typing import Any

from tests import politeness_score as politeness


def log(per_second: list[int], statuses: dict[int, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """``per_second[s]`` 200s spread over second ``s``, plus the given extra records per second."""
    out: list[dict[str, Any]] = []
    for s, n in enumerate(per_second):
        out += [{"t": 1000.0 + s + k / n, "dur": 0.0, "status": 200, "retry_after": None} for k in range(n)]
        for extra in (statuses or {}).get(s, []):
            out.append({"t": 1000.0 + s + 0.999, "dur": 0.0, **extra})
    return out


def test_startup_peak_and_seconds_above_the_limit_after_warm_up() -> None:
    # C = 10: a start-up burst of 21 in second 1 (inside the 3 s warm-up), then 10/s with one second of
    # 13 (> 12.5) and one of 12 (not above 1.25 C); the last, incomplete second is left out
    records = log([4, 21, 10, 10, 13, 12, 10, 10, 30])
    row = politeness.measure("x", records, capacity=10, warmup=3)
    assert row.startup_peak == 21
    assert row.seconds_over == 1
    assert row.max_1s == 30 and row.requests == len(records)
    assert dict(politeness.goals(row, 10))["no second > 1.25 C"] is False
    calm = politeness.measure("x", log([4, 21, 10, 10, 12, 10, 10]), capacity=10, warmup=3)
    assert calm.seconds_over == 0 and calm.startup_peak == 21
    assert all(ok for _, ok in politeness.goals(calm, 10)[1:])


def test_only_announced_windows_count_and_the_goals() -> None:
    bare = {"status": 429, "retry_after": None}
    announced = {"status": 429, "retry_after": "2"}
    # second 0: the start-up meets the limit (a bare 429), so the start-up lasts until 2 s after it;
    # second 3: a bare 429 (no window); second 5: a 429 announcing 2 s, then 200s in seconds 6 and 7
    records = log([10] * 9, {0: [bare], 3: [bare], 5: [announced]})
    row = politeness.measure("x", records, capacity=10, warmup=2)
    assert row.inside_retry_after == 20  # seconds 6 and 7, not the ones after the bare 429s
    assert row.overloaded == 3 and row.longest_overload == 1
    assert row.share_429 == 2 / 62  # after the start-up: seconds 3 to 8
    verdict = dict(politeness.goals(row, 10))
    assert verdict["0 inside Retry-After"] is False and verdict["429s <= 2%"] is False
    assert verdict["goodput >= 0.9 C"] is True


def test_the_start_up_lasts_until_the_crawler_has_met_the_limit() -> None:
    """A token bucket's burst hides the limit: the start-up overshoot before (and just after) the first
    429 is the start-up peak, judged against one start-up step; what follows is the steady state."""
    records = log([5, 8, 12, 14, 14, 10, 10, 10, 10, 10, 10], {4: [{"status": 429, "retry_after": None}]})
    row = politeness.measure("x", records, capacity=10, warmup=2)
    assert row.startup_peak == 15  # second 4 (and its 429): inside the start-up although after the warm-up
    assert row.seconds_over == 0
    verdict = dict(politeness.goals(row, 10))
    assert verdict["start-up peak <= 1.5 C"] is True and verdict["no second > 1.25 C"] is True
    assert (
        dict(politeness.goals(politeness.measure("x", records, capacity=9, warmup=2), 9))["start-up peak <= 1.5 C"]
        is False
    )


def test_medians_over_repeats() -> None:
    rows = [politeness.measure("x", log([n] * 6), capacity=10, warmup=1) for n in (8, 10, 30)]
    med = politeness.median_row(rows)
    assert med.goodput == rows[1].goodput and med.requests == 60


def test_a_short_crawls_first_five_seconds_are_the_sites_own() -> None:
    """The request log is the site's own (one server per crawled site): the first five seconds of a
    short crawl count from the site's first request, however late the crawl reached the site."""
    # C = 10: the log starts at the site's first request (t = 1000, whenever the crawl began); its
    # start-up overshoots to 25 in its own second 3, then 10/s
    records = log([3, 6, 12, 25, 14, 10, 10, 10, 10])
    row = politeness.measure_short("x", records, capacity=10)
    assert row.startup_peak == 25 and row.max_1s_late == 10
    assert dict(politeness.goals(row, 10, short=True))["no 1 s > 1.25 C + 1 after 5 s"] is True
    # the same overshoot one second later, in the site's sixth second, is in the measured period
    late = politeness.measure_short("x", log([3, 6, 12, 12, 12, 25, 10, 10, 10]), capacity=10)
    assert late.max_1s_late == 25
    assert dict(politeness.goals(late, 10, short=True))["no 1 s > 1.25 C + 1 after 5 s"] is False
