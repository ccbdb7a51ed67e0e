"""An honest identity: the User-Agent names the crawler and its operator, and a crawl of a
non-loopback site without IMAGECRAWL_CONTACT refuses to start, before anything touches the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagecrawl import __version__
from imagecrawl.addon import user_agent
from imagecrawl.guard.downloadermiddlewares.identity import IdentityConfig, is_loopback_host, valid_contact
from tests.conftest import run_crawl

SITE = {"SPIDER_MODULES": "tests.sitespider"}


@pytest.mark.parametrize(
    ("contact", "ok"),
    [
        ("https://example.org/bot", True),
        ("http://example.org", True),
        ("ops@example.org", True),
        ("mailto:ops@example.org", True),
        ("", False),
        ("   ", False),
        ("bob", False),
        ("ftp://example.org/", False),
        ("https://", False),
        ("ops@example", False),
        ("x@y.z)\r\nX-Evil: 1", False),
    ],
)
def test_valid_contact(contact: str, ok: bool) -> None:
    assert valid_contact(contact) is ok


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("api.localhost", True),
        ("10.0.0.1", False),
        ("example.invalid", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_user_agent_and_config() -> None:
    # The crawl-level check (the User-Agent the server saw) is in test_optout_crawl.py.
    assert user_agent("ops@example.org") == f"imagecrawl/{__version__} (+ops@example.org)"
    assert IdentityConfig(contact="ops@example.org").has_contact
    assert not IdentityConfig(contact="nobody").has_contact


@pytest.mark.e2e
def test_non_loopback_start_url_without_contact_refuses_to_start(tmp_path: Path) -> None:
    result = run_crawl("site", store=tmp_path, args={"start": "https://example.invalid/"}, settings=SITE, check=False)
    assert result.returncode == 2
    assert "ERROR: Refusing to crawl example.invalid: IMAGECRAWL_CONTACT is not set" in result.stderr
    assert "'finish_reason': 'imagecrawl_no_contact'" in result.stderr  # the stats dump in the log
    assert "downloader/request_count" not in result.stderr  # nothing was sent
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_invalid_contact_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = run_crawl(
        "site",
        store=tmp_path,
        args={"start": "https://example.invalid/"},
        settings={**SITE, "IMAGECRAWL_CONTACT": "bob"},
        check=False,
    )
    assert result.returncode == 2
    assert "IMAGECRAWL_CONTACT ('bob') is neither an http(s) URL nor an e-mail" in result.stderr


@pytest.mark.e2e
def test_non_loopback_request_at_run_time_stops_the_crawl(tmp_path: Path) -> None:
    """No start_urls: the first request comes from start(); it is dropped before any connection."""
    result = run_crawl(
        "site",
        store=tmp_path,
        args={"start": "https://example.invalid/", "late": "1"},
        settings=SITE,
        check=False,
    )
    assert result.returncode == 2
    assert result.stats["imagecrawl/identity/refused"] == 1
    assert result.stats["finish_reason"] == "imagecrawl_no_contact"
    assert "downloader/request_count" not in result.stats
    assert "imagecrawl/netguard/dns_error" not in result.stats  # not even a DNS lookup
    assert "Traceback" not in result.stderr
