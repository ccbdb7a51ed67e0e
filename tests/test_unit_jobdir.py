"""JOBDIR: the serialization check, its ERROR line, and the requests a stop cuts off at the gate."""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.request import request_from_dict
from twisted.python.failure import Failure

from imagecrawl import exitcodes, meta
from imagecrawl.incremental import Incremental
from imagecrawl.jobdir.downloadermiddlewares import KeepOnCloseMiddleware
from imagecrawl.jobdir.extensions import (
    MARKER,
    CrawlClosing,
    JobdirGuard,
    ResumeGuard,
    keep_for_next_run,
    serialization_problem,
)
from imagecrawl.records import SourceHints
from imagecrawl.storage.context import crawl_context
from spiders.urls import UrlsSpider
from tests.crawlers import make_crawler


class Other:
    def failed(self, failure: Failure) -> None:
        pass


def spider(tmp_path: Path, **settings: Any) -> Spider:
    listing = tmp_path / "list.csv"
    listing.write_text("url,caption\nhttps://img.example/1.png,one\n")
    crawler = make_crawler(UrlsSpider, IMAGECRAWL_STORE=str(tmp_path / "store"), **settings)
    crawler._apply_settings()
    crawler.spider = UrlsSpider.from_crawler(crawler, input=str(listing))
    assert crawler.stats is not None
    crawler.stats.open_spider()
    return crawler.spider


def image(s: Any, **kwargs: Any) -> Request:
    request: Request = s.image_request("https://img.example/1.png", SourceHints(source="urls", source_id="1"), **kwargs)
    return request


def test_spider_requests_survive_the_disk_queue(tmp_path: Path) -> None:
    s = spider(tmp_path)
    request = image(s, meta={meta.WALK: "civitai:q"}, errback=s.image_failed)
    assert serialization_problem(request, s) is None
    back = request_from_dict(request.to_dict(spider=s), spider=s)
    assert back.errback == s.image_failed and back.callback == s.parse_image
    assert back.cb_kwargs == request.cb_kwargs and back.meta == request.meta


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda s: image(s, errback=Other().failed), "Other.failed"),  # an errback bound to another object
        (lambda s: Request("https://a.example/", callback=lambda r: None), "lambda"),
        (lambda s: image(s, meta={"lock": threading.Lock()}), "meta ['lock'] cannot be pickled"),
    ],
)
def test_unserializable_requests_are_named(tmp_path: Path, make: Any, problem: str) -> None:
    s = spider(tmp_path)
    found = serialization_problem(make(s), s)
    assert found is not None and problem in found


def test_guard_logs_an_error_for_each_unserializable_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = spider(tmp_path, JOBDIR=str(tmp_path / "job"))
    guard = JobdirGuard.from_crawler(s.crawler)
    with caplog.at_level(logging.ERROR, logger="imagecrawl.jobdir.extensions"):
        guard.request_scheduled(image(s, errback=s.image_failed), s)  # fine: nothing logged
        assert caplog.records == []
        for _ in range(12):
            guard.request_scheduled(image(s, errback=Other().failed), s)
        guard.spider_closed()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 11  # ten one by one, then the sum
    assert "https://img.example/1.png cannot be saved in JOBDIR" in errors[0]
    assert "12 requests of this crawl could not be saved" in errors[-1]
    assert s.crawler.stats is not None
    assert s.crawler.stats.get_value("imagecrawl/jobdir/unserializable") == 12


def test_without_jobdir_nothing_is_checked(tmp_path: Path) -> None:
    s = spider(tmp_path)
    with pytest.raises(NotConfigured):
        JobdirGuard.from_crawler(s.crawler)
    with pytest.raises(NotConfigured):
        KeepOnCloseMiddleware.from_crawler(s.crawler)


def test_a_request_cut_off_by_the_stop_is_scheduled_again(tmp_path: Path) -> None:
    s = spider(tmp_path, JOBDIR=str(tmp_path / "job"))
    mw = KeepOnCloseMiddleware.from_crawler(s.crawler)
    request = image(s, meta={meta.SENT_AT: 1.0, meta.PACING_GRANTED: True, meta.SITE: "img.example"})
    kept = mw.process_exception(request, CrawlClosing())
    assert kept is not None and kept is not request
    assert kept.dont_filter and kept.url == request.url and kept.callback == s.parse_image
    assert meta.SENT_AT not in kept.meta and meta.PACING_GRANTED not in kept.meta
    assert kept.meta[meta.SITE] == "img.example" and kept.meta[meta.RECORD_ID] == "urls:1"
    assert mw.process_exception(request, IgnoreRequest("robots.txt disallows it")) is None
    assert s.crawler.stats is not None
    assert s.crawler.stats.get_value("imagecrawl/jobdir/kept_on_close") == 1
    assert keep_for_next_run(request).priority == request.priority


def test_image_failed_reaches_the_walk(tmp_path: Path) -> None:
    s = spider(tmp_path)
    request = image(s, meta={meta.WALK: "urls:q", meta.DOWNLOAD_ERROR: "timeout"}, errback=s.image_failed)
    failure = Failure(IgnoreRequest("download failed (timeout)"))
    failure.request = request  # type: ignore[attr-defined]
    s.image_failed(failure)  # no incremental walk in this crawl: nothing to mark, no error
    incremental = crawl_context(s.crawler).get(Incremental, lambda: Incremental(s.crawler))
    walk = asyncio.run(incremental.begin("urls", "q"))
    assert not walk.failed
    s.image_failed(failure)
    assert walk.failed


@pytest.mark.parametrize(
    ("opened", "code", "clean"),
    [
        (True, 0, True),
        (True, exitcodes.WRITE_ERROR, False),
        (True, exitcodes.STORE, False),
        (False, 0, False),
        (True, -1, False),  # images left undecided (another run's claims): not a failure, not clean either
    ],
)
def test_only_a_stop_that_lost_nothing_clears_the_resume_marker(
    tmp_path: Path, opened: bool, code: int, clean: bool
) -> None:
    """A crawl the full disk stopped (its fetched images never reached the spool, yet their requests are in
    requests.seen) or that never started leaves JOBDIR unclean: the next run discards the queue and walks
    again, instead of resuming past the images it lost."""
    jobdir = tmp_path / "job"
    crawler = make_crawler(UrlsSpider, IMAGECRAWL_STORE=str(tmp_path / "store"), JOBDIR=str(jobdir))
    assert crawler.stats is not None
    crawler.stats.open_spider()
    guard = crawler.get_extension(ResumeGuard)  # built with the crawler's extensions
    assert (jobdir / MARKER).exists()
    if opened:
        guard.spider_opened()
    if code > 0:
        exitcodes.set_exit_code(crawler.stats, code)
    elif code < 0:
        exitcodes.mark_unsettled(crawler.stats)
    guard.spider_closed("finished")
    assert (jobdir / MARKER).exists() is not clean
    assert crawler.stats.get_value("imagecrawl/resume/kept_unclean") == (None if clean else 1)
    (jobdir / "requests.seen").write_text("x\n")
    again = make_crawler(UrlsSpider, IMAGECRAWL_STORE=str(tmp_path / "store"), JOBDIR=str(jobdir))
    assert again.get_extension(ResumeGuard).unclean is not clean
    assert (jobdir / "requests.seen").exists() is clean


@pytest.mark.parametrize("body", [b"", b"\x80\x04\x95"])
def test_a_spider_state_cut_short_is_set_aside(tmp_path: Path, body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk or a kill can leave Scrapy's spider.state empty or torn; SpiderState would then fail every
    later run in that JOBDIR at open. It is set aside, and Scrapy's own extension opens with a fresh state."""
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    (jobdir / "spider.state").write_bytes(body)
    crawler = make_crawler(UrlsSpider, IMAGECRAWL_STORE=str(tmp_path / "store"), JOBDIR=str(jobdir))
    assert crawler.stats is not None
    assert crawler.stats.get_value("imagecrawl/resume/spider_state_discarded") == 1
    assert not (jobdir / "spider.state").exists() and (jobdir / "spider.state.corrupt").read_bytes() == body
    assert "spider.state is unreadable" in caplog.text
    # a readable state is left alone
    again_dir = tmp_path / "job2"
    again_dir.mkdir()
    (again_dir / "spider.state").write_bytes(pickle.dumps({"pages": 3}))
    again = make_crawler(UrlsSpider, IMAGECRAWL_STORE=str(tmp_path / "store"), JOBDIR=str(again_dir))
    assert again.stats is not None and again.stats.get_value("imagecrawl/resume/spider_state_discarded") is None
    assert pickle.loads((again_dir / "spider.state").read_bytes()) == {"pages": 3}
