"""The one place setting values are checked (imagecrawl/settings_check.py): ranges, non-finite numbers
and the values that must name something that works, each a one-line ConfigError naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from scrapy.settings import Settings

from imagecrawl.errors import ConfigError
from imagecrawl.settings_check import check_settings
from tests.crawlers import project_settings


def check(**given: object) -> None:
    settings = Settings(project_settings())
    settings.setdict(given, priority="cmdline")
    check_settings(settings)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8;10.0.0.0/8"}, "separate networks with commas, not ';'"),
        ({"IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8, nope"}, "'nope' is not a network"),
        ({"IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "0"}, "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE must be an integer >= 1"),
        ({"IMAGECRAWL_MAX_RATE_PER_SITE": "0"}, "IMAGECRAWL_MAX_RATE_PER_SITE must be a number > 0, got '0'"),
        ({"IMAGECRAWL_MAX_RATE_PER_SITE": "-5"}, "IMAGECRAWL_MAX_RATE_PER_SITE must be a number > 0, got '-5'"),
        ({"IMAGECRAWL_MAX_RATE_PER_SITE": "nan"}, "IMAGECRAWL_MAX_RATE_PER_SITE must be a number > 0, got 'nan'"),
        ({"IMAGECRAWL_SHARD_MAX_SECONDS": "inf"}, "IMAGECRAWL_SHARD_MAX_SECONDS must be a finite number"),
        ({"IMAGECRAWL_TUNING": {"pacing_decrease_factor": "1.5"}}, "between 0 and 1"),
        ({"LOG_LEVEL": "FOO"}, "LOG_LEVEL must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG; got 'FOO'"),
        ({"LOG_LEVEL": "info"}, "LOG_LEVEL must be one of"),
    ],
)
def test_bad_values_are_one_line_config_errors(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check(**given)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_files_and_folders_the_crawl_writes(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(ConfigError, match=r"setting JOBDIR .*names a file, not a folder"):
        check(JOBDIR=str(a_file))
    with pytest.raises(ConfigError, match=r"setting LOG_FILE .*cannot write there: a file stands where a folder"):
        check(LOG_FILE=str(a_file / "log.txt"))
    with pytest.raises(ConfigError, match=r"setting IMAGECRAWL_STATS_FILE .*is a folder"):
        check(IMAGECRAWL_STATS_FILE=str(tmp_path))
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(ConfigError, match=r"IMAGECRAWL_STATS_FILE .*cannot write there"):
            check(IMAGECRAWL_STATS_FILE=str(locked / "s.json"))
    # good values pass, and leave nothing behind but the folders the crawl would make
    check(
        JOBDIR=str(tmp_path / "job"),
        LOG_FILE=str(tmp_path / "logs" / "crawl.log"),
        IMAGECRAWL_STATS_FILE=str(tmp_path / "stats" / "s.json"),
        LOG_LEVEL="DEBUG",
        IMAGECRAWL_ALLOWED_NETWORKS="127.0.0.0/8, ::1",
    )
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == []
    assert (tmp_path / "job").is_dir()
