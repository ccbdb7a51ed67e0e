"""Secrets never reach a log line, the report or the stats file.

:func:`secret_values` picks the values of credential-like settings (``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``*_PASSWORD``, ``*_TOKEN``, ``*_API_KEY``, the author salt, ...) and the
password of every URL-valued setting (``redis://:pw@host``); :class:`RedactingFilter` replaces them
with ``***`` in every log record that passes a handler it is installed on, Scrapy's own "Overridden
settings" line included; :func:`redact` does the same for a text about to be written. No Scrapy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from imagecrawl.values import utf8_safe

MASK = "***"
#: setting names whose value is a credential
SECRET_NAME = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY|AUTHORIZATION|_SALT$)", re.IGNORECASE
)
#: shorter values are not masked (they would mask unrelated text; no real secret is that short)
MIN_SECRET_LENGTH = 4
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@/\s]+)@", re.I)
#: query parameters that carry a credential (API keys, tokens, signed-URL signatures), masked wherever
#: they appear in a URL
SECRET_PARAMS = (
    "access_token|api_key|apikey|api-key|auth|auth_token|authorization|client_secret|key|password|passwd|pwd|"
    "secret|session_token|sig|signature|token|x-amz-credential|x-amz-security-token|x-amz-signature|"
    "x-goog-signature|x-goog-credential"
)
_SECRET_PARAM = re.compile(rf"(?P<name>[?&;](?:{SECRET_PARAMS})=)(?P<value>[^&#\s\"'<>]+)", re.I)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _strings(item)


def secret_values(settings: Iterable[tuple[str, Any]]) -> set[str]:
    """The secrets among ``(name, value)`` pairs (a Scrapy ``Settings`` gives them as ``.items()``)."""
    found: set[str] = set()
    for name, value in settings:
        secret_name = bool(SECRET_NAME.search(str(name)))
        for text in _strings(value):
            if secret_name:
                found.add(text)
            for match in _URL_PASSWORD.finditer(text):
                found.add(match["password"])
            try:
                password = urlsplit(text).password if "://" in text else None
            except ValueError:
                password = None
            if password:
                found.add(password)
            for match in _SECRET_PARAM.finditer(text):
                if match["value"] != MASK:
                    found.add(match["value"])
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


def url_secrets(values: Iterable[Any]) -> set[str]:
    """The credentials inside URLs among ``values`` (any names): URL passwords and secret query
    parameters, e.g. of spider arguments (``-a api_url=http://bob:pw@host``)."""
    return secret_values(("", value) for value in values)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and every URL password) replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)


def mask(text: str) -> str:
    """``text`` with the secrets known to this process (:func:`install`) and every credential in a URL
    masked, made valid UTF-8: for anything about to be written (a state file, a log, an error line)."""
    return utf8_safe(redact(text, _FILTER.secrets))


class RedactingFilter(logging.Filter):
    """Rewrites a record whose message holds a secret; the record is always let through."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Always on: a URL's credentials are masked whether or not a secret setting is configured, and
        text that cannot be encoded (a lone surrogate from a page) is made valid UTF-8."""
        try:
            message = record.getMessage()
        except Exception:  # a broken record: leave it to the handler's own error path
            return True
        clean = utf8_safe(redact(message, self.secrets))
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_text is None:
            record.exc_text = utf8_safe(redact(logging.Formatter().formatException(record.exc_info), self.secrets))
        elif record.exc_text:
            record.exc_text = utf8_safe(redact(record.exc_text, self.secrets))
        return True


#: one filter for the process, its secrets the union over every crawl's settings
_FILTER = RedactingFilter()


_FACTORY_INSTALLED = False


def will_be_handled(name: str, level: int) -> bool:
    """Whether a record of ``level`` made by logger ``name`` now reaches a handler whose level takes it.

    A record is handled right after it is made, so this is what happens to it: Scrapy lets every DEBUG
    record be made (the root logger's level is NOTSET) and its handler drops those below ``LOG_LEVEL``;
    masking one of them would format its message (a scraped item's whole repr) for nothing. When in doubt
    (a logger not made through :func:`logging.getLogger`, the root logger), the record is masked."""
    logger = logging.Logger.manager.loggerDict.get(name)
    if not isinstance(logger, logging.Logger):
        return True
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found = True
            if level >= handler.level:
                return True
        if not current.propagate:
            break
        current = current.parent
    if not found:
        last = logging.lastResort
        return last is None or level >= last.level
    return False


#: Scrapy's loggers that make a DEBUG record for every response ("Crawled (200) ...") and every scraped
#: item ("Scraped from ...")
PER_RESPONSE_LOGGERS = ("scrapy.core.engine", "scrapy.core.scraper")


def skip_unhandled_debug(names: Iterable[str] = PER_RESPONSE_LOGGERS) -> Callable[[], None]:
    """Loggers of ``names`` whose DEBUG records no handler takes now (``LOG_LEVEL`` above DEBUG and no other
    handler at DEBUG) stop making them: a logger left at NOTSET gets the level just above DEBUG, so
    ``logger.debug`` returns before a record is made, masked and dropped by the handler (two records per
    image). Nothing a handler would take is lost. Returns the undo (the loggers back at NOTSET), for the
    end of the crawl: a handler added later sees their DEBUG records again."""
    changed: list[logging.Logger] = []
    for name in names:
        named = logging.getLogger(name)
        if named.level == logging.NOTSET and not will_be_handled(name, logging.DEBUG):
            named.setLevel(logging.DEBUG + 1)
            changed.append(named)

    def undo() -> None:
        for named in changed:
            if named.level == logging.DEBUG + 1:
                named.setLevel(logging.NOTSET)

    return undo


def _install_record_factory() -> None:
    """Mask every log record where it is made: a handler added later (Scrapy installs its ``LOG_FILE``
    handler once the crawler's settings are applied, after the add-ons and the spider) is covered too."""
    global _FACTORY_INSTALLED
    if _FACTORY_INSTALLED:
        return
    make = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if will_be_handled(record.name, record.levelno):
            _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(masked_record)
    _FACTORY_INSTALLED = True


def install(secrets: Iterable[str], loggers: Iterable[str] = ("scrapy.crawler",)) -> RedactingFilter:
    """Mask ``secrets`` from now on: every log record as it is made, every handler of the root logger
    (every record that is written goes through one) and ``loggers`` themselves."""
    _FILTER.secrets.update(secrets)
    _install_record_factory()
    root = logging.getLogger()
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return _FILTER


def current_secrets() -> set[str]:
    """The secrets installed so far in this process (settings, and URL credentials of spider arguments)."""
    return set(_FILTER.secrets)
