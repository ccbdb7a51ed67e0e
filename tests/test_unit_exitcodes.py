"""One exit-code rule: the first failure recorded decides the status of ``scrapy crawl``."""

from __future__ import annotations

from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.test import get_crawler

from imagecrawl import exitcodes
from imagecrawl.errors import ConfigError, StoreError


def test_the_first_failure_wins() -> None:
    crawler = get_crawler(settings_dict={"STATS_CLASS": "scrapy.statscollectors.MemoryStatsCollector"})
    stats = MemoryStatsCollector(crawler)
    assert exitcodes.exit_code(stats) == 0
    assert exitcodes.set_exit_code(stats, exitcodes.WRITE_ERROR) is True
    assert exitcodes.set_exit_code(stats, exitcodes.STORE) is False
    assert exitcodes.exit_code(stats) == exitcodes.WRITE_ERROR
    assert stats.get_value(exitcodes.EXIT_CODE_STAT) == 5


def test_start_errors_use_the_same_codes() -> None:
    assert ConfigError("x").exit_code == exitcodes.USAGE == 2
    assert StoreError("x").exit_code == exitcodes.STORE == 3
