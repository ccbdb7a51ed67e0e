"""User mistakes as one line, and the runtime install: unit tests of the checks behind them."""

from __future__ import annotations

import ast
import io
import logging
import re
import sys
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.utils.misc import load_object
from scrapy.utils.test import get_crawler

from imagecrawl import cli
from imagecrawl.errors import ConfigError, unknown_name
from imagecrawl.pacing.config import PacingConfig, circuit_config_from_settings
from imagecrawl.report.extensions.outcome import counts
from imagecrawl.report.extensions.progress import PROGRESS, progress_level
from imagecrawl.settings_check import MOVED_COMPONENTS, OLD_RESOLVER, check_settings
from imagecrawl.tuning import fields as tuning_fields
from imagecrawl.tuning import tuning
from spiders.civitai import CivitaiSpider
from spiders.gallery import GallerySpider
from tests.crawlers import make_crawler, project_settings

REPO = Path(__file__).resolve().parent.parent
#: the component settings and the role module their components live in (docs/architecture.md#layout)
LAYOUT_ROLES = {
    "DOWNLOADER_MIDDLEWARES": "downloadermiddlewares",
    "SPIDER_MIDDLEWARES": "spidermiddlewares",
    "ITEM_PIPELINES": "pipelines",
    "EXTENSIONS": "extensions",
    "SCHEDULER": "scheduler",
}
#: packages of the dev group and of the extras: never imported at module level by the runtime
NOT_RUNTIME = {
    "pytest",
    "moto",
    "duckdb",
    "hypothesis",
    "mypy",
    "scrapyd",
    "scrapyd_client",
    "polars",
    "datasets",
    "sd_parsers",
    "redis",
    "scrapy_redis",
    "scrapy_playwright",
    "playwright",
}


def _settings(**values: object) -> Settings:
    settings = Settings(project_settings())
    settings.setdict(values, priority="cmdline")
    return settings


def test_settings_check_names_the_setting() -> None:
    check_settings(_settings())  # the project's own values pass
    with pytest.raises(ConfigError, match=r"^setting IMAGECRAWL_MAX_RATE_PER_SITE must be a number, got 'abc'$"):
        check_settings(_settings(IMAGECRAWL_MAX_RATE_PER_SITE="abc"))
    with pytest.raises(ConfigError, match=r"IMAGECRAWL_SHARD_MAX_ROWS must be an integer, got '1.5'"):
        check_settings(_settings(IMAGECRAWL_SHARD_MAX_ROWS="1.5"))
    with pytest.raises(ConfigError, match=r"^IMAGECRAWL_TUNING key 'shard_flush_on_idle' must be true or false"):
        check_settings(_settings(IMAGECRAWL_TUNING={"shard_flush_on_idle": "sometimes"}))
    with pytest.raises(ConfigError, match="DOWNLOAD_DELAY must be a number"):
        check_settings(_settings(DOWNLOAD_DELAY="soon"))
    check_settings(_settings(DOWNLOAD_DELAY="0.5", IMAGECRAWL_BANS_ENABLED="false", RETRY_TIMES="2"))


def test_unknown_setting_has_the_nearest_match() -> None:
    with pytest.raises(ConfigError) as info:
        check_settings(_settings(IMAGECRAWL_MAX_RATE=3))
    message = str(info.value)
    assert message.startswith("unknown setting: 'IMAGECRAWL_MAX_RATE' (did you mean 'IMAGECRAWL_MAX_RATE_PER_SITE'?)")
    assert message.endswith("valid ones: docs/settings.md") and "\n" not in message


def test_unknown_name_lists_short_lists_in_full() -> None:
    error = unknown_name("argument of x", "max_item", ["max_items", "q"])
    assert str(error) == "unknown argument of x: 'max_item' (did you mean 'max_items'?); valid: max_items, q"
    assert "did you mean" not in str(unknown_name("thing", "zzz", ["abc"]))


def test_unknown_spider_argument_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'max_item' \(did you mean 'max_items'\?\); valid: api_url, endpoint"):
        CivitaiSpider(max_item="3")
    with pytest.raises(ConfigError, match="valid: max_items, max_pages, profile, start_url"):
        GallerySpider(start_urls="http://example.org/")
    # Scrapyd's job id and Scrapy's own name pass
    assert CivitaiSpider(_job="abc", name="civitai").name == "civitai"


def test_progress_level_follows_log_level() -> None:
    assert progress_level("DEBUG") == progress_level("INFO") == 20
    assert progress_level("WARNING") == PROGRESS
    assert progress_level("ERROR") is None and progress_level(50) is None


def test_outcome_counts() -> None:
    stats = {"imagecrawl/netguard/refused": 3, "imagecrawl/download/errors/dns": 2, "imagecrawl/netguard/dns_error": 1}
    assert counts(stats) == ({"imagecrawl/netguard/refused": 3}, 3)
    assert counts({}) == ({}, 0)


def test_cli_help_lists_subcommands_and_missing_extra_is_one_line() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["--help"]) == 0
    for name in cli.COMMANDS:
        assert f"    {name} " in out.getvalue()
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        cli.main(["nope"])
    assert exit_info.value.code == 2 and "invalid choice" in err.getvalue()


def test_every_help_works_without_the_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    """`imagecrawl seed --help` prints its help without the redis extra; running it says what to install."""
    for name in [m for m in sys.modules if m == "redis" or m.startswith(("redis.", "imagecrawl.distributed.seeds"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ModuleNotFoundError
    for command in cli.COMMANDS:
        out = io.StringIO()
        with redirect_stdout(out):
            try:
                code = cli.main([command, "--help"])
            except SystemExit as exc:  # argparse's own --help
                code = int(exc.code or 0)
        assert code == 0 and out.getvalue().startswith(f"usage: imagecrawl {command}"), (command, out.getvalue())
    err = io.StringIO()
    with redirect_stderr(err):
        assert cli.main(["seed", "--redis", "redis://127.0.0.1:1/0", "gallery", "http://127.0.0.1/"]) == 2
    assert err.getvalue().startswith("imagecrawl: error: imagecrawl seed needs the 'redis' extra")


def test_runtime_install_has_no_dev_tools() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["uv"]["default-groups"] == []
    runtime = " ".join(project["project"]["dependencies"]).lower()
    for name in ("pytest", "moto", "mypy", "ruff", "duckdb", "polars", "datasets", "redis"):
        assert name not in runtime
    assert "--all-groups" in (REPO / "scripts" / "test").read_text()


def test_runtime_modules_import_no_optional_package_at_module_level() -> None:
    offenders = []
    for path in sorted([*(REPO / "imagecrawl").rglob("*.py"), *(REPO / "spiders").rglob("*.py")]):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("imagecrawl/distributed/") or rel == "imagecrawl/browser.py":
            continue  # the optional parts themselves (extras redis, browser)
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in NOT_RUNTIME]
    assert offenders == []


def test_inspect_takes_the_report_that_finished_last(tmp_path: Path) -> None:
    import json
    import os

    import pyarrow.fs as pafs

    from imagecrawl.inspect import _reports

    reports = tmp_path / ".imagecrawl" / "reports"
    reports.mkdir(parents=True)
    for run, finished in (("20261101T000000Z-a-0001", 2_000_000_000), ("20261102T000000Z-b-0002", 1_900_000_000)):
        path = reports / f"{run}.json"
        path.write_text(json.dumps({"run_id": run, "finish_reason": "finished"}))
        os.utime(path, (finished, finished))
    summary = _reports(pafs.LocalFileSystem(), str(tmp_path))
    # the run that started first finished last (a long crawl beside a short one)
    assert summary["run_id"] == "20261101T000000Z-a-0001" and summary["count"] == 2


def test_an_internal_under_its_old_name_is_one_line_naming_its_tuning_key() -> None:
    with pytest.raises(ConfigError) as caught:
        check_settings(_settings(IMAGECRAWL_PACING_JITTER="0"))
    assert str(caught.value) == (
        "setting IMAGECRAWL_PACING_JITTER is now the key 'pacing_jitter' of IMAGECRAWL_TUNING: "
        'IMAGECRAWL_TUNING = {"pacing_jitter": "0"} (docs/settings.md#tuning, CHANGELOG.md)'
    )
    # every key of Tuning was a setting of its own: each old name is refused the same way
    for key in tuning_fields():
        with pytest.raises(ConfigError, match=rf"^setting IMAGECRAWL_{key.upper()} is now the key '{key}' "):
            check_settings(_settings(**{f"IMAGECRAWL_{key.upper()}": 1}))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"circuit_cooloff": 1},
            "unknown IMAGECRAWL_TUNING key: 'circuit_cooloff' (did you mean 'circuit_cooloff_seconds'?)",
        ),
        ({"ban_burst": "many"}, "IMAGECRAWL_TUNING key 'ban_burst' must be an integer, got 'many'"),
        ({"ban_burst": 2.5}, "IMAGECRAWL_TUNING key 'ban_burst' must be an integer, got 2.5"),
        ({"pacing_jitter": "nan"}, "IMAGECRAWL_TUNING key 'pacing_jitter' must be a finite number, got 'nan'"),
        (
            {"pacing_decrease_factor": 1.5},
            "IMAGECRAWL_TUNING key 'pacing_decrease_factor' must be a number between 0 and 1, got 1.5",
        ),
        (
            {"circuit_enabled": "perhaps"},
            "IMAGECRAWL_TUNING key 'circuit_enabled' must be true or false, got 'perhaps'",
        ),
        (
            {"dedupe_backend": "mongo"},
            "IMAGECRAWL_TUNING key 'dedupe_backend' must be one of auto, sqlite, redis, got 'mongo'",
        ),
        ({"browser_args": [1]}, "IMAGECRAWL_TUNING key 'browser_args' must be a list of strings, got [1]"),
        ("{not json", "setting IMAGECRAWL_TUNING must be a JSON object, got '{not json'"),
        ("[1, 2]", "setting IMAGECRAWL_TUNING must be a dict (a JSON object), got [1, 2]"),
    ],
)
def test_a_bad_tuning_key_or_value_is_one_line(given: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_settings(_settings(IMAGECRAWL_TUNING=given))
    assert str(caught.value).startswith(message), str(caught.value)


def test_tuning_overrides_reach_the_components_as_typed_values() -> None:
    """Text from ``-s`` (JSON) and Python values give the same typed config; untouched keys keep their default."""
    text = '{"ban_burst": "7", "circuit_enabled": "false", "browser_args": "--a,--b"}'
    from_cli = tuning(_settings(IMAGECRAWL_TUNING=text))
    values = {"ban_burst": 7, "circuit_enabled": False, "browser_args": ["--a", "--b"]}
    from_py = tuning(_settings(IMAGECRAWL_TUNING=values))
    assert from_cli == from_py
    assert (from_cli.ban_burst, from_cli.circuit_enabled, from_cli.browser_args) == (7, False, ("--a", "--b"))
    assert from_cli.ban_max_probes == tuning_fields()["ban_max_probes"]
    crawler = make_crawler(IMAGECRAWL_TUNING={"circuit_failures": 9, "pacing_jitter": 0})
    assert PacingConfig.from_settings(crawler.settings).jitter == 0
    assert circuit_config_from_settings(crawler.settings).failures == 9


def test_a_renamed_setting_is_one_line_naming_the_new_one() -> None:
    with pytest.raises(ConfigError, match=r"^setting IMAGECRAWL_RETRY_TIMES was renamed: use RETRY_TIMES "):
        check_settings(_settings(IMAGECRAWL_RETRY_TIMES="2"))
    with pytest.raises(ConfigError, match=r"^setting IMAGECRAWL_RETRY_ENABLED was renamed: use RETRY_ENABLED "):
        check_settings(_settings(IMAGECRAWL_RETRY_ENABLED="false"))


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({}, True),
        ({"TWISTED_DNS_RESOLVER": "scrapy.resolver.CachingThreadedResolver"}, True),
        ({"TWISTED_DNS_RESOLVER": "imagecrawl.guard.resolver.GuardedResolver"}, False),
        ({"IMAGECRAWL_NETGUARD_ENABLED": False}, False),
    ],
)
def test_the_addon_says_when_the_project_did_not_name_the_guarded_resolver(
    caplog: pytest.LogCaptureFixture, settings: dict[str, object], warned: bool
) -> None:
    """Scrapy installs the DNS resolver from the project's settings before add-ons run (docs/settings.md)."""
    with caplog.at_level(logging.WARNING, logger="imagecrawl.addon"):
        get_crawler(settings_dict={"ADDONS": {"imagecrawl.Addon": 100}, **settings})
    lines = [r.getMessage() for r in caplog.records if "TWISTED_DNS_RESOLVER" in r.getMessage()]
    assert len(lines) == (1 if warned else 0), lines


@pytest.mark.parametrize("old", sorted(MOVED_COMPONENTS))
def test_a_component_named_by_its_old_path_is_one_line_naming_the_new_one(old: str) -> None:
    """Placed or turned off (None) under its path from before the feature folders: one line, before Scrapy
    would import the old path (a None entry would otherwise be dropped silently, the component left on)."""
    new = MOVED_COMPONENTS[old]
    assert load_object(new).__name__ == old.rsplit(".", 1)[1]
    with pytest.raises(ImportError):
        load_object(old)
    setting = next(name for name, role in LAYOUT_ROLES.items() if role in new.split(".")[1:3])
    for value in (None, 500):
        given: object = old if setting == "SCHEDULER" else {old: value}
        line = f"setting {setting} names {old}, which moved: use {new} (CHANGELOG.md)"
        with pytest.raises(ConfigError, match=f"^{re.escape(line)}$"):
            get_crawler(settings_dict={"ADDONS": {"imagecrawl.Addon": 100}, setting: given})


def test_every_component_the_addon_installs_is_at_its_new_path() -> None:
    from imagecrawl import defaults

    installed = {path for name in LAYOUT_ROLES if name != "SCHEDULER" for path in getattr(defaults, name)}
    installed.add(defaults.SCHEDULER)
    # the distributed add-on's components, installed when a Redis URL is set
    from imagecrawl.distributed import addon

    installed |= {addon.SCHEDULER, addon.DUPEFILTER, addon.GLOBAL_RATE_MIDDLEWARE, addon.LEASE_MIDDLEWARE}
    assert {new for new in MOVED_COMPONENTS.values()} <= installed


def test_a_dupefilter_named_by_its_old_path_is_one_line_naming_the_new_one() -> None:
    old = "imagecrawl.distributed.frontier.RedisDupeFilter"
    line = f"setting DUPEFILTER_CLASS names {old}, which moved: use imagecrawl.distributed.scheduler.RedisDupeFilter"
    with pytest.raises(ConfigError, match=f"^{re.escape(line)} \\(CHANGELOG.md\\)$"):
        get_crawler(settings_dict={"ADDONS": {"imagecrawl.Addon": 100}, "DUPEFILTER_CLASS": old})


def test_the_old_resolver_path_keeps_working_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Scrapy installs TWISTED_DNS_RESOLVER before any add-on runs: the old path cannot be refused first."""
    from imagecrawl.guard.resolver import GuardedResolver

    assert load_object(OLD_RESOLVER) is GuardedResolver
    with caplog.at_level(logging.WARNING, logger="imagecrawl.addon"):
        get_crawler(settings_dict={"ADDONS": {"imagecrawl.Addon": 100}, "TWISTED_DNS_RESOLVER": OLD_RESOLVER})
    lines = [r.getMessage() for r in caplog.records if "TWISTED_DNS_RESOLVER" in r.getMessage()]
    assert lines == [
        f"TWISTED_DNS_RESOLVER names {OLD_RESOLVER}, which moved: use "
        "'imagecrawl.guard.resolver.GuardedResolver' (the old path still works; CHANGELOG.md)"
    ]
