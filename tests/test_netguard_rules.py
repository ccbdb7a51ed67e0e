"""The network guard's address rules, and the middleware with an injected resolver (no network):
a name that resolves to a private address is refused before anything is sent."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from scrapy import Request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from imagecrawl.guard.downloadermiddlewares.netguard import (
    NetGuardConfig,
    NetGuardMiddleware,
    blocked_reason,
    parse_networks,
)
from tests.crawlers import project_settings


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link_local"),
        ("fe80::1", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.254", "cgnat"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("fec0::1", "private"),  # site-local
        ("168.63.129.16", "metadata"),  # Azure wire server
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8: a public address
        ("::10.0.0.1", "private"),  # IPv4-compatible
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_blocked_reason(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_allowed_networks() -> None:
    config = NetGuardConfig(allowed=parse_networks("127.0.0.0/8, ::1/128, 169.254.0.0/16"))
    assert config.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert config.refusal(ipaddress.ip_address("::1")) is None
    assert config.refusal(ipaddress.ip_address("10.0.0.1")) == "private"
    assert config.refusal(ipaddress.ip_address("169.254.3.4")) is None
    # A metadata endpoint is only allowed by an entry naming it exactly.
    assert config.refusal(ipaddress.ip_address("169.254.169.254")) == "metadata"
    exact = NetGuardConfig(allowed=parse_networks(["169.254.169.254/32"]))
    assert exact.refusal(ipaddress.ip_address("169.254.169.254")) is None
    assert NetGuardConfig().refusal(ipaddress.ip_address("93.184.216.34")) is None


def test_ipv6_forms_of_refused_ipv4_are_refused_whatever_the_ipv6_allow_entries_say() -> None:
    config = NetGuardConfig(allowed=parse_networks("::/0, ::ffff:0:0/96, 64:ff9b::/96, 2002::/16"))
    for address in ("::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a00:1::", "::ffff:10.1.2.3", "::10.0.0.1"):
        assert config.refusal(ipaddress.ip_address(address)) is not None, address
    assert config.refusal(ipaddress.ip_address("fd12::1")) is None  # a real IPv6 entry still works
    v4 = NetGuardConfig(allowed=parse_networks("127.0.0.0/8"))
    assert v4.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None  # the IPv4 entry decides
    assert v4.refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) == "metadata"


def test_config_from_settings() -> None:
    config = NetGuardConfig.from_settings(Settings(project_settings(**{"IMAGECRAWL_ALLOWED_NETWORKS": "10.0.0.0/8"})))
    assert config.enabled and config.allowed == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="not-a-net"):
        parse_networks("127.0.0.0/8,not-a-net")


def test_switching_off_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    crawler = get_crawler(settings_dict=project_settings(**{"IMAGECRAWL_NETGUARD_ENABLED": False}))
    with caplog.at_level("WARNING"), pytest.raises(NotConfigured):
        NetGuardMiddleware.from_crawler(crawler)
    assert "IMAGECRAWL_NETGUARD_ENABLED is off" in caplog.text


def _guard(allowed: str = "") -> tuple[NetGuardMiddleware, list[str], dict[str, list[str]]]:
    answers = {
        "intranet.example": ["10.0.0.5"],
        "mixed.example": ["93.184.216.34", "192.168.0.9"],
        "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "metadata.example": ["169.254.169.254"],
    }
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    crawler = get_crawler(settings_dict=project_settings(**{"IMAGECRAWL_ALLOWED_NETWORKS": allowed}))
    crawler.stats.open_spider()
    guard = NetGuardMiddleware(crawler, NetGuardConfig.from_settings(crawler.settings), resolver=resolver)
    return guard, asked, answers


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://intranet.example/a.png", "private"),
        ("https://mixed.example/a.png", "private"),  # every address must pass
        ("http://metadata.example/latest/", "metadata"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://[::ffff:10.0.0.1]:8080/", "private"),
        ("http://100.64.1.1/", "cgnat"),
        ("http://224.0.0.251/", "multicast"),
    ],
)
def test_refused_before_sending(url: str, reason: str) -> None:
    guard, _, _ = _guard()
    with pytest.raises(IgnoreRequest, match=reason):
        asyncio.run(guard.process_request(Request(url)))
    assert guard.stats.get_value(f"imagecrawl/netguard/refused/{reason}") == 1


def test_public_and_allowed_pass_and_resolution_is_cached() -> None:
    guard, asked, _ = _guard(allowed="10.0.0.0/8")

    async def run() -> None:
        await guard.process_request(Request("http://public.example/a.png"))
        await guard.process_request(Request("http://public.example/b.png"))
        await guard.process_request(Request("http://intranet.example/ok.png"))  # allowed range
        await guard.process_request(Request("data:,hello"))
        with pytest.raises(IgnoreRequest, match="dns_error"):  # fail closed: never the downloader's own lookup
            await guard.process_request(Request("http://unknown.example/"))

    asyncio.run(run())
    assert asked == ["public.example", "intranet.example", "unknown.example"]
    # a DNS failure, counted once, and not as a refusal by the guard's rules
    assert guard.stats.get_value("imagecrawl/netguard/refused") is None
    assert guard.stats.get_value("imagecrawl/netguard/refused/dns_error") is None
    assert guard.stats.get_value("imagecrawl/netguard/dns_error") == 1


def test_real_resolver_with_a_local_name() -> None:
    """``localhost`` resolves from /etc/hosts: the default resolver, with no network involved."""
    crawler = get_crawler()
    crawler.stats.open_spider()
    guard = NetGuardMiddleware(crawler, NetGuardConfig())
    with pytest.raises(IgnoreRequest, match="loopback"):
        asyncio.run(guard.process_request(Request("http://localhost:9/x.png")))
    allowed = NetGuardMiddleware(crawler, NetGuardConfig(allowed=parse_networks("127.0.0.0/8,::1")))
    asyncio.run(allowed.process_request(Request("http://localhost:9/x.png")))
