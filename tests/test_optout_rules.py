"""Pure opt-out rules: X-Robots-Tag, HTML meta, TDMRep precedence and locations, Crawl-delay registry,
and the typed configs read from settings (no crawler)."""

from __future__ import annotations

import pytest
from scrapy.settings import Settings

from imagecrawl import defaults as project_settings
from imagecrawl.optout import (
    blocking_directives,
    location_matches,
    parse_tdm_header,
    parse_tdmrep_json,
    parse_x_robots_tag,
    scan_html_meta,
    tdm_file_reservation,
    tdm_reserved,
)
from imagecrawl.optout.config import OptOutConfig
from imagecrawl.optout.crawldelay import MAX_CRAWL_DELAY_SECONDS, CrawlDelays
from imagecrawl.optout.downloadermiddlewares.robots import crawl_delays
from imagecrawl.optout.tdmrep import TdmRepError
from tests.crawlers import make_crawler
from tests.crawlers import project_settings as defaults

TOKEN = "imagecrawl"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["noai"], {"noai"}),
        (["noindex, NoImageAI"], {"noindex", "noimageai"}),
        (["imagecrawl: noai"], {"noai"}),
        (["ImageCrawl: noimageai, noindex"], {"noimageai", "noindex"}),
        (["*: noai"], {"noai"}),
        (["otherbot: noai"], set()),
        (["googlebot: noindex", "imagecrawl: noai"], {"noai"}),
        (["noindex, otherbot: noai"], {"noindex"}),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], {"unavailable_after"}),
        (["max-image-preview: none, noai"], {"max-image-preview", "noai"}),
        (["", " , "], set()),
    ],
)
def test_x_robots_tag_addressing(values: list[str], expected: set[str]) -> None:
    assert parse_x_robots_tag(values, TOKEN) == expected


def test_blocking_directives_default_and_configured() -> None:
    default = frozenset({"noai", "noimageai"})
    assert blocking_directives({"noindex", "noai"}, default) == ["noai"]
    assert blocking_directives({"noindex"}, default) == []
    assert blocking_directives({"none"}, {"noindex"}) == ["none"]
    assert blocking_directives({"noimageindex"}, {"noimageindex"}) == ["noimageindex"]


def test_scan_html_meta_robots_token_and_tdm() -> None:
    html = (
        "<html><head><META NAME='Robots' CONTENT='noindex noai'>"
        '<meta name="imagecrawl" content="noimageai"><meta name="googlebot" content="noimageai,none">'
        '<meta name="tdm-reservation" content="1"><meta name="tdm-policy" content="https://p.example/">'
        "</head><body><img src=x></body></html>"
    )
    meta = scan_html_meta(html, TOKEN)
    assert meta.robots == {"noindex", "noai", "noimageai"}
    assert meta.tdm_reservation == 1
    assert meta.tdm_policy == "https://p.example/"


@pytest.mark.parametrize(
    "html",
    ["", "<meta name=robots", "<<<>>>" * 1000, "<meta name='robots' content='noai'" + "x" * 10, "\x00\ud800"],
)
def test_scan_html_meta_never_raises(html: str) -> None:
    scan_html_meta(html, TOKEN)


def test_scan_html_meta_ignores_other_bots_and_bad_values() -> None:
    meta = scan_html_meta('<meta name="otherbot" content="noai"><meta name="tdm-reservation" content="yes">', TOKEN)
    assert meta.robots == set()
    assert meta.tdm_reservation is None


def test_tdm_precedence_file_lt_header_lt_meta() -> None:
    assert tdm_reserved(1, None, None)
    assert not tdm_reserved(1, 0, None)  # header overrides file
    assert tdm_reserved(0, 1, None)
    assert not tdm_reserved(1, 1, 0)  # meta overrides header
    assert tdm_reserved(0, 0, 1)
    assert not tdm_reserved(None, None, None)


def test_tdm_header_values() -> None:
    assert parse_tdm_header([b"1"]) == 1
    assert parse_tdm_header([" 0 "]) == 0
    assert parse_tdm_header([b"0", b"1"]) == 1
    assert parse_tdm_header([b"maybe"]) is None
    assert parse_tdm_header([]) is None


@pytest.mark.parametrize(
    ("location", "path", "match"),
    [
        ("/", "/anything", True),
        ("/images/", "/images/a.png", True),
        ("/images/", "/img/a.png", False),
        ("/*.png$", "/a/b.png", True),
        ("/*.png$", "/a/b.png?x=1", False),
        ("/*.png", "/a/b.png?x=1", True),
        ("/a$", "/a", True),
        ("/a$", "/ab", False),
        ("images/", "/images/x", True),
        ("/caf%C3%A9/", "/café/x", True),
        ("/a.b/", "/aXb/", False),
    ],
)
def test_location_patterns_as_in_robots_txt(location: str, path: str, match: bool) -> None:
    assert location_matches(location, path) is match


def test_tdmrep_file_first_matching_rule_applies() -> None:
    rules = parse_tdmrep_json(
        b'[{"location": "/art/free/", "tdm-reservation": 0},'
        b' {"location": "/art/", "tdm-reservation": 1, "tdm-policy": "https://p/"},'
        b' {"location": 5}, "junk", {"location": "/x", "tdm-reservation": true}]'
    )
    assert [(r.location, r.reservation) for r in rules] == [("/art/free/", 0), ("/art/", 1)]
    hit = tdm_file_reservation(rules, "https://s.example/art/free/1.png")
    assert hit is not None and hit.reservation == 0
    hit = tdm_file_reservation(rules, "https://s.example/art/2.png")
    assert hit is not None and hit.reservation == 1 and hit.policy == "https://p/"
    assert tdm_file_reservation(rules, "https://s.example/other") is None


@pytest.mark.parametrize("body", [b"{", b'{"location": "/"}', b"\xff\xfe", b"[" * 100_000, b" " * 600_000])
def test_tdmrep_invalid_files_are_errors(body: bytes) -> None:
    with pytest.raises(TdmRepError):
        parse_tdmrep_json(body)


def test_crawl_delay_registry() -> None:
    owner = make_crawler()
    registry = crawl_delays(owner)
    assert crawl_delays(owner) is registry
    assert crawl_delays(make_crawler()) is not registry  # one registry per crawl
    seen: list[tuple[str, float | None]] = []
    registry.listeners.append(lambda netloc, delay: seen.append((netloc, delay)))
    registry.set("a.example", 2.5)
    registry.set("b.example:8080", 1e9)
    registry.set("c.example", float("nan"))
    assert registry.get("a.example") == 2.5
    assert registry.get("b.example:8080") == MAX_CRAWL_DELAY_SECONDS
    assert registry.get("c.example") is None
    assert seen[0] == ("a.example", 2.5)
    registry.set("a.example", None)
    assert registry.as_dict() == {"b.example:8080": MAX_CRAWL_DELAY_SECONDS}
    assert isinstance(CrawlDelays(), CrawlDelays)


def test_optout_config_defaults_from_project_settings(tmp_path: object) -> None:
    settings = Settings()
    settings.setmodule(project_settings)
    settings.set("IMAGECRAWL_STORE", "/srv/store")
    config = OptOutConfig.from_settings(settings)
    assert config.enabled and config.x_robots_tag and config.meta_robots and config.tdmrep
    assert config.directives == {"noai", "noimageai"}
    assert config.token == "imagecrawl"
    assert str(config.log_path) == "/srv/store/.imagecrawl/state/optout.jsonl"


def test_optout_config_switches_and_directives() -> None:
    config = OptOutConfig.from_settings(
        Settings(
            defaults(
                **{
                    "IMAGECRAWL_OPTOUT_DIRECTIVES": "noai, noindex,none",
                    "IMAGECRAWL_OPTOUT_LOG": "-",
                    "IMAGECRAWL_TUNING": {"optout_x_robots_tag": "False"},
                }
            )
        )
    )
    assert not config.x_robots_tag
    assert config.directives == {"noai", "noindex", "none"}
    assert config.log_path is None
    with pytest.raises(ValueError, match="nofollow"):
        OptOutConfig.from_settings(Settings(defaults(**{"IMAGECRAWL_OPTOUT_DIRECTIVES": "noai,nofollow"})))


def test_disabled_rules_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    config = OptOutConfig.from_settings(
        Settings(defaults(**{"IMAGECRAWL_OPTOUT_LOG": "-", "IMAGECRAWL_TUNING": {"optout_tdmrep": False}}))
    )
    with caplog.at_level("WARNING"):
        config.warn_disabled()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "IMAGECRAWL_TUNING['optout_tdmrep'] is off" in caplog.text
