"""The frontier's compact duplicate filter: exact answers across merges of its sorted array, Scrapy's
fingerprints and log/stat behaviour, and JOBDIR's ``requests.seen`` read and written in Scrapy's format."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import scrapy
from scrapy import Request
from scrapy.dupefilters import RFPDupeFilter
from scrapy.utils.test import get_crawler

from imagecrawl.pacing.scheduler import CompactDupeFilter
from imagecrawl.pacing.seen import FingerprintSet, key_of


class Spider(scrapy.Spider):
    name = "dupefilter_test"


def test_the_set_answers_exactly_across_merges() -> None:
    rng = random.Random(7)
    keys = [key_of(rng.randbytes(20)) for _ in range(3000)]
    others = [key_of(rng.randbytes(20)) for _ in range(3000)]
    seen = FingerprintSet(recent_max=97)
    for i, key in enumerate(keys):
        assert key not in seen
        seen.add(key)
        assert key in seen
        if i % 500 == 0:
            assert all(k in seen for k in keys[: i + 1])
    assert len(seen) == 3000 and seen.nbytes >= 16 * (3000 - 97)
    assert not any(k in seen for k in others)
    seen.merge()
    arr = seen._sorted
    assert len(arr) == 3000 and bool(np.all(arr[:-1] < arr[1:]))  # sorted, no duplicates
    assert all(k in seen for k in keys)
    # keys whose kept bytes end in NUL are still told apart (the 0x01 suffix)
    zero = key_of(b"\x00" * 20)
    assert zero not in seen and len(zero) == 16
    seen.add(zero)
    seen.merge()
    assert zero in seen and key_of(b"\x00" * 19 + b"\x01") in seen  # same first 15 bytes: one key
    assert key_of(b"\x01" + b"\x00" * 19) not in seen


def crawler(jobdir: Path | None = None):  # type: ignore[no-untyped-def]
    settings = {"JOBDIR": str(jobdir)} if jobdir else {}
    c = get_crawler(Spider, settings_dict=settings)
    return c


def test_duplicates_are_filtered_as_scrapys_filter_does(tmp_path: Path) -> None:
    c = crawler()
    ours = CompactDupeFilter.from_crawler(c)
    scrapys = RFPDupeFilter.from_crawler(c)
    urls = [f"https://h{i % 1500 % 37}.example/img/{i % 1500}.png?b=1&a=2" for i in range(4000)]
    # duplicates once canonical: the query's order, a fragment
    urls += ["https://h1.example/img/1.png?a=2&b=1", "https://h1.example/img/1.png?b=1&a=2#frag"]
    for url in urls:
        request = Request(url)
        assert ours.request_seen(request) == scrapys.request_seen(request), url
    assert len(ours.seen) == len(scrapys._fingerprints) == 1500
    assert not ours.request_seen(Request("https://h1.example/img/1.png", method="POST"))  # method counts


def test_jobdir_requests_seen_is_scrapys_format_both_ways(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    first = CompactDupeFilter.from_crawler(crawler(job))
    for i in range(300):
        assert not first.request_seen(Request(f"https://a.example/{i}"))
    first.close("shutdown")
    # Scrapy's own filter reads what ours wrote ...
    scrapys = RFPDupeFilter.from_crawler(crawler(job))
    assert len(scrapys._fingerprints) == 300
    assert scrapys.request_seen(Request("https://a.example/7"))
    assert not scrapys.request_seen(Request("https://b.example/new"))
    scrapys.close("shutdown")
    # ... and ours reads what Scrapy's wrote, a tail cut short by an unclean stop ignored
    with (job / "requests.seen").open("ab") as f:
        f.write((20).to_bytes(2, "big") + b"\x05" * 7)
    again = CompactDupeFilter.from_crawler(crawler(job))
    assert len(again.seen) == 301
    assert again.request_seen(Request("https://a.example/299")) and again.request_seen(Request("https://b.example/new"))
    assert not again.request_seen(Request("https://c.example/"))
    again.close("finished")
