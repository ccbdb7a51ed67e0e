"""imagecrawl as a Scrapy add-on: ``ADDONS = {"imagecrawl.Addon": 100}`` in any Scrapy project.

It installs the components (pacing, bans, opt-outs, robots.txt, the network guard, the known-image check,
dedupe, Parquet shards, the store's owner, the monitor, the report) and sets every default of
:mod:`imagecrawl.defaults` at add-on priority, as scrapy-zyte-api's add-on does: the project's own
settings, a spider's ``custom_settings`` and ``-s`` keep the last word, and a component the project
set to ``None`` stays off. Then it fixes what depends on other settings before the crawl starts (secrets
masked in the logs, every ``IMAGECRAWL_*`` checked, the User-Agent from ``IMAGECRAWL_CONTACT``)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings
from scrapy.utils.misc import load_object

from imagecrawl import UA_TOKEN, __version__, defaults, redact
from imagecrawl.settings_check import OLD_RESOLVER, check_moved_components, check_settings

logger = logging.getLogger(__name__)


def user_agent(contact: str) -> str:
    """The honest User-Agent: product token, version and a way to reach the operator."""
    contact = contact.strip()
    return f"{UA_TOKEN}/{__version__} (+{contact})" if contact else f"{UA_TOKEN}/{__version__}"


def configured_secrets(settings: BaseSettings) -> set[str]:
    """Credential-like values the user set (Scrapy's own defaults, such as FTP_PASSWORD, are no secret)."""
    return redact.secret_values((name, value) for name, value in settings.items() if settings.getpriority(name))


#: the settings that list components: merged entry by entry, never replaced
COMPONENT_SETTINGS = ("DOWNLOADER_MIDDLEWARES", "SPIDER_MIDDLEWARES", "ITEM_PIPELINES", "EXTENSIONS")


def default_values() -> dict[str, Any]:
    """Every default of :mod:`imagecrawl.defaults` but the component lists (fresh copies)."""
    return {
        name: copy.deepcopy(value)
        for name, value in vars(defaults).items()
        if name.isupper() and name not in COMPONENT_SETTINGS
    }


def with_defaults(settings: BaseSettings) -> BaseSettings:
    """A copy of ``settings`` with the add-on's defaults beneath them, for what Scrapy builds from the
    process's settings before any add-on runs (the DNS resolver)."""
    view = settings.copy()
    for name, value in default_values().items():
        view.set(name, value, priority="addon")
    return view


def install_components(settings: BaseSettings) -> None:
    """Add imagecrawl's components at their place (unless the project placed or disabled them already), and
    turn off the Scrapy components they replace (robots.txt, retry, decompression)."""
    for name in COMPONENT_SETTINGS:
        for path, order in getattr(defaults, name).items():
            if order is None:
                settings.set_in_component_priority_dict(name, load_object(path), None)
            else:
                settings.setdefault_in_component_priority_dict(name, load_object(path), order)


def warn_process_settings(settings: BaseSettings, given: Any) -> None:
    """The network guard checks the address a connection is made to only through the DNS resolver that
    Scrapy installs for the whole process from the project's settings (``given``, read before the add-on's
    defaults), before any add-on runs: a project that did not name it gets one WARNING saying what to add
    (the guard's check before each request stays)."""
    if given == OLD_RESOLVER:
        logger.warning(
            "TWISTED_DNS_RESOLVER names %s, which moved: use %r (the old path still works; CHANGELOG.md)",
            OLD_RESOLVER,
            defaults.TWISTED_DNS_RESOLVER,
        )
    if not settings.getbool("IMAGECRAWL_NETGUARD_ENABLED"):
        return
    try:
        resolver = given if isinstance(given, type) else load_object(str(given)) if given else None
    except (ImportError, AttributeError, ValueError, NameError):
        resolver = None  # Scrapy itself says what is wrong with it
    wanted = load_object(defaults.TWISTED_DNS_RESOLVER)
    if not (isinstance(resolver, type) and issubclass(resolver, wanted)):
        logger.warning(
            "The network guard checks each request, but not the address a connection is made to (DNS "
            "rebinding): add TWISTED_DNS_RESOLVER = %r to the project's settings (Scrapy installs the "
            "resolver before add-ons run; docs/settings.md)",
            defaults.TWISTED_DNS_RESOLVER,
        )


#: loggers of the image library that log every chunk of every file they read at DEBUG
IMAGE_DECODER_LOGGERS = ("PIL",)


def quiet_image_decoders() -> None:
    """Pillow logs each PNG chunk it reads at DEBUG ("STREAM b'IHDR' 16 13"): three records or more per
    image, each made (Scrapy's root logger lets every level through) only to be dropped by the handler,
    or written at ``LOG_LEVEL=DEBUG`` as noise. Its loggers start at INFO unless a level was set for them."""
    for name in IMAGE_DECODER_LOGGERS:
        decoder_logger = logging.getLogger(name)
        if decoder_logger.level == logging.NOTSET:
            decoder_logger.setLevel(logging.INFO)


def follow_site_concurrency(settings: BaseSettings) -> None:
    """Scrapy's ``CONCURRENT_REQUESTS_PER_DOMAIN`` keeps its meaning when the user sets it (a site's cap is
    then the smaller of it and ``IMAGECRAWL_MAX_CONCURRENCY_PER_SITE``); left unset, it follows
    ``IMAGECRAWL_MAX_CONCURRENCY_PER_SITE``, so raising that one alone is not silently held at the default."""
    if (settings.getpriority("CONCURRENT_REQUESTS_PER_DOMAIN") or 0) <= SETTINGS_PRIORITIES["addon"]:
        settings.set(
            "CONCURRENT_REQUESTS_PER_DOMAIN", settings.getint("IMAGECRAWL_MAX_CONCURRENCY_PER_SITE"), priority="addon"
        )


class Addon:
    def update_settings(self, settings: BaseSettings) -> None:
        resolver = settings.get("TWISTED_DNS_RESOLVER")  # the process's, installed before add-ons run
        check_moved_components(settings)  # before Scrapy imports a component's old path (exit 2, one line)
        for name, value in default_values().items():
            settings.set(name, value, priority="addon")
        install_components(settings)
        # Before Scrapy logs its "Overridden settings" line: secrets never reach a log line.
        redact.install(configured_secrets(settings))
        quiet_image_decoders()
        check_settings(settings)  # unknown IMAGECRAWL_* names, values that do not parse: one line, exit 2
        warn_process_settings(settings, resolver)
        follow_site_concurrency(settings)
        if settings.getpriority("USER_AGENT") in (None, 0, 10):
            # Only replace Scrapy's own default, never a value the user set.
            settings.set("USER_AGENT", user_agent(settings.get("IMAGECRAWL_CONTACT")), priority="addon")


#: the add-on's earlier name (imagecrawl's own settings listed it before it became imagecrawl.Addon)
ImagecrawlAddon = Addon
