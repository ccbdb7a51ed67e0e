"""``--retry-after-share``: only a share of the sandbox's 429s carry Retry-After, and the request log
records which did, so ``requests_inside_windows`` counts only windows the site really announced."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.sandbox.cli import misbehave_config, parse_args
from tests.sandbox.misbehave import MisbehaveConfig, Misbehaviour, announces, requests_inside_windows
from tests.sandbox.testing import sandbox


@pytest.mark.parametrize(("share", "expected"), [(1.0, 60), (0.5, 30), (0.3, 18), (0.0, 0)])
def test_the_share_of_refusals_with_retry_after_holds_over_every_prefix(share: float, expected: int) -> None:
    # Retry-After 0 s: each announced window is over at once, so every request meets an empty bucket
    m = Misbehaviour(MisbehaveConfig(capacity=0.001, burst=1, retry_after=0.0, retry_after_share=share))
    assert m.admit("a", 0.0) is None  # the one token
    carried = []
    for k in range(60):
        answer = m.admit("a", 1.0 + k)
        assert answer is not None and answer.status == 429
        carried.append("Retry-After" in answer.headers)
    assert sum(carried) == expected
    for n in range(1, 61):  # spread evenly, the first included
        assert abs(sum(carried[:n]) - share * n) < 1.0, (n, carried)
    if share > 0:
        assert carried[0]
    if share == 0.5:
        assert carried[:6] == [True, False] * 3


def test_a_refusal_without_retry_after_opens_no_window() -> None:
    m = Misbehaviour(MisbehaveConfig(capacity=0.001, burst=1, retry_after=2.0, retry_after_share=0.5))
    assert m.admit("a", 0.0) is None
    first = m.admit("a", 0.1)
    assert first is not None and first.headers["Retry-After"] == "2"
    inside = m.admit("a", 1.0)  # inside the announced window: 429 with what is left of it
    assert inside is not None and float(inside.headers["Retry-After"]) == pytest.approx(1.1)
    second = m.admit("a", 2.5)  # the window is over, the bucket still empty: a bare 429
    assert second is not None and second.status == 429 and "Retry-After" not in second.headers
    third = m.admit("a", 2.6)  # it opened no window: a fresh refusal, which announces again
    assert third is not None and third.headers["Retry-After"] == "2"


def test_announces_spreads_the_share() -> None:
    assert [announces(0.25, n) for n in range(8)] == [True, False, False, False] * 2
    assert all(announces(1.0, n) for n in range(10))
    assert not any(announces(0.0, n) for n in range(10))


def test_the_share_flag_is_checked_and_reaches_the_config() -> None:
    args = parse_args(["--capacity", "5", "--retry-after", "2", "--retry-after-share", "0.5"])
    assert misbehave_config(args).retry_after_share == 0.5
    assert misbehave_config(parse_args(["--capacity", "5"])).retry_after_share == 1.0
    for bad in (["--retry-after", "1", "--retry-after-share", "1.5"], ["--retry-after-share", "0.5"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(bad)
        assert exc.value.code == 2


def test_windows_come_from_the_logged_header() -> None:
    records: list[dict[str, object]] = [
        {"t": 0.0, "dur": 0.0, "status": 429, "retry_after": "1"},  # opens [0, 1)
        {"t": 0.5, "dur": 0.0, "status": 429, "retry_after": "0.5"},  # inside
        {"t": 1.2, "dur": 0.0, "status": 429, "retry_after": None},  # announced nothing
        {"t": 1.3, "dur": 0.0, "status": 429, "retry_after": "Thu, 01 Jan 1970 00:00:03 GMT"},  # until 3
        {"t": 2.0, "dur": 0.0, "status": 200, "retry_after": None},  # inside
        {"t": 3.1, "dur": 0.0, "status": 200, "retry_after": None},
    ]
    assert requests_inside_windows(records) == 2
    # a log without the field: every 429 is taken to have announced the given seconds
    bare = [{k: v for k, v in r.items() if k != "retry_after"} for r in records]
    assert requests_inside_windows(bare, 1.0) == 3  # 0.5, and 1.3 and 2.0 (inside the window 1.2 opened)
    assert requests_inside_windows(bare) == 0


@pytest.mark.e2e
def test_the_log_records_only_the_windows_the_site_announced(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    flags = ["--capacity", "0.01", "--capacity-burst", "1", "--retry-after", "1", "--retry-after-share", "0.5"]
    with sandbox(items=5, log_path=log, extra_args=flags) as sb:

        def get() -> int:
            try:
                with urllib.request.urlopen(sb.url("robots.txt"), timeout=10) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as err:
                return err.code

        statuses = [get(), get(), get()]  # 200; 429 announcing 1 s; 429 inside that window
        time.sleep(1.3)
        statuses += [get(), get()]  # 429 announcing nothing; 429 announcing 1 s (no window was open)
        records = sb.wait_for_requests(5)
    assert statuses == [200, 429, 429, 429, 429]
    records.sort(key=lambda r: r["t"])
    announced = [r["retry_after"] for r in records]
    assert announced[0] is None and announced[1] == "1" and announced[3] is None and announced[4] == "1"
    assert 0 < float(announced[2]) < 1  # what was left of the window
    assert requests_inside_windows(records) == 1  # only the third request
    # had every 429 been taken to announce 1 s, the last request would have counted too
    bare = [{k: v for k, v in r.items() if k != "retry_after"} for r in records]
    assert requests_inside_windows(bare, 1.0) == 2
