"""One exit-code rule: the first failure recorded decides the status of ``scrapy crawl``."""

from __future__ import annotations

from pathlib import Path

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


def test_store_commands_map_errors_with_the_same_rule(tmp_path: Path) -> None:
    import sqlite3

    import botocore.exceptions
    import redis

    from imagecrawl.errors import MissingExtraError

    assert exitcodes.status_of(ConfigError("x")) == exitcodes.USAGE
    assert exitcodes.status_of(MissingExtraError("x")) == exitcodes.USAGE
    assert exitcodes.status_of(StoreError("x")) == exitcodes.STORE
    try:
        (tmp_path / "absent" / "file").read_text()
    except OSError as exc:
        assert exitcodes.status_of(exc) == exitcodes.STORE
    not_a_db = tmp_path / "not.sqlite3"
    not_a_db.write_bytes(b"this is not a database file, not at all" * 50)
    try:
        sqlite3.connect(not_a_db).execute("SELECT * FROM seen").fetchall()
    except sqlite3.Error as exc:
        assert exitcodes.status_of(exc) == exitcodes.STORE
    assert exitcodes.status_of(botocore.exceptions.NoCredentialsError()) == exitcodes.STORE
    assert exitcodes.status_of(redis.ConnectionError("refused")) == exitcodes.STORE
    # a bug keeps its traceback
    assert exitcodes.status_of(KeyError("x")) is None
    assert exitcodes.status_of(ValueError("x")) is None
