"""Secret masking: which settings count as secrets, and a log record that carries one."""

from __future__ import annotations

import logging

import pytest
from scrapy.settings import Settings

from imagecrawl.addon import configured_secrets
from imagecrawl.redact import RedactingFilter, redact, secret_values


def test_credential_like_settings_and_url_passwords_are_secrets() -> None:
    found = secret_values(
        [
            ("AWS_SECRET_ACCESS_KEY", "abcd1234secret"),
            ("AWS_SESSION_TOKEN", "tok-tok-tok"),
            ("IMAGECRAWL_REDIS_URL", "redis://:redispass@127.0.0.1:6379/0"),
            ("DOWNLOAD_TIMEOUT", 30),
            ("USER_AGENT", "imagecrawl/1.0"),
            ("SOME_PASSWORD", "ab"),  # too short to mask safely
        ]
    )
    assert found == {"abcd1234secret", "tok-tok-tok", "redispass"}


def test_scrapy_defaults_are_not_secrets_but_user_values_are() -> None:
    settings = Settings({"AWS_SECRET_ACCESS_KEY": "user-set-secret"}, priority="cmdline")
    settings.set("FTP_PASSWORD", "guest", priority="default")
    assert configured_secrets(settings) == {"user-set-secret"}


def test_a_record_carrying_a_secret_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.redact")
    caplog.handler.addFilter(RedactingFilter({"abcd1234secret"}))
    with caplog.at_level(logging.INFO):
        log.info("settings: %(s)s", {"s": {"AWS_SECRET_ACCESS_KEY": "abcd1234secret"}})
        log.info("connecting to %s", "redis://user:pw-in-url@h:1/0")
    assert "abcd1234secret" not in caplog.text and "pw-in-url" not in caplog.text
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in caplog.text and "redis://user:***@h:1/0" in caplog.text
    assert redact("nothing here", {"abcd1234secret"}) == "nothing here"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("GET http://bob:ApiPass9999@127.0.0.1:8/api?x=1", "ApiPass9999"),
        ("https://host/img.png?X-Amz-Signature=deadbeef99&X-Amz-Credential=AKIAXYZ", "deadbeef99"),
        ("https://host/img.png?a=1&X-Amz-Credential=AKIAXYZ123", "AKIAXYZ123"),
        ("/api/v1/images?token=tok-12345&limit=5", "tok-12345"),
        ('<a href="/x?a=1&amp;api_key=k-98765">', "k-98765"),
    ],
)
def test_url_credentials_are_masked_without_any_configured_secret(text: str, leaked: str) -> None:
    assert leaked not in redact(text, [])
    assert "***" in redact(text, [])


def test_url_secrets_of_arguments_and_the_always_on_filter() -> None:
    from imagecrawl.redact import url_secrets

    assert url_secrets(["http://bob:ApiPass9999@host/", "plain", "https://h/?sig=abcdef12"]) == {
        "ApiPass9999",
        "abcdef12",
    }
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "site %s key %s", ("bob:ApiPass9999@h", "\udc80"), None)
    flt = RedactingFilter({"ApiPass9999"})
    assert flt.filter(record)
    assert record.getMessage() == "site bob:***@h key \ufffd"
    bare = logging.LogRecord("x", logging.INFO, __file__, 1, "GET %s", ("http://u:SecretPw1@h/",), None)
    RedactingFilter().filter(bare)  # no configured secret at all: still masked
    assert record.getMessage().encode("utf-8") and "SecretPw1" not in bare.getMessage()


class _Counted:
    """An argument that counts how often a log record's message was formatted."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.formatted = 0

    def __str__(self) -> str:
        self.formatted += 1
        return self.text


def test_records_no_handler_takes_are_not_formatted_and_the_rest_are_masked() -> None:
    from imagecrawl.redact import install, will_be_handled

    install({"Zq7SecretValue"})
    parent = logging.getLogger("imagecrawl.test_redact_levels")
    child = logging.getLogger("imagecrawl.test_redact_levels.child")
    parent.propagate = False
    parent.setLevel(logging.DEBUG)  # every record is made, as under Scrapy (root at NOTSET)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(logging.INFO)
    parent.addHandler(handler)
    try:
        assert not will_be_handled(child.name, logging.DEBUG) and will_be_handled(child.name, logging.INFO)
        debug = _Counted("key Zq7SecretValue")
        child.debug("dropped %s", debug)  # below every handler: made, never formatted, never written
        assert debug.formatted == 0 and seen == []
        info = _Counted("key Zq7SecretValue at http://u:UrlPw12345@h/")
        child.info("kept %s", info)
        assert info.formatted >= 1 and seen == ["kept key *** at http://u:***@h/"]
        handler.setLevel(logging.DEBUG)  # a handler that takes DEBUG: DEBUG records are masked again
        child.debug("now %s", _Counted("Zq7SecretValue"))
        assert seen[-1] == "now ***"
        # a logger nobody made through getLogger (the root's name is not in the registry): masked
        assert will_be_handled("no.such.logger.made", logging.DEBUG)
    finally:
        parent.removeHandler(handler)
        parent.propagate = True
        parent.setLevel(logging.NOTSET)
