"""Extensions a crawl of this project runs, built by Scrapy's own ExtensionManager."""

from __future__ import annotations

from scrapy.extensions.remote_control import RemoteControl
from scrapy.extensions.telnet import TelnetConsole
from scrapy.middleware import MiddlewareManager

from tests.crawlers import make_crawler


def _extension_types(**overrides: object) -> set[type]:
    crawler = make_crawler(**overrides)
    crawler._apply_settings()
    manager: MiddlewareManager = crawler.extensions
    return {type(ext) for ext in manager.middlewares}


def test_remote_control_and_telnet_are_off_unless_turned_on() -> None:
    types = _extension_types()
    assert RemoteControl not in types and TelnetConsole not in types
    assert RemoteControl in _extension_types(REMOTE_CONTROL_ENABLED=True)
