"""The opt-out settings read once into a typed config. No Scrapy (any object with Scrapy's getters)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imagecrawl import UA_TOKEN, defaults
from imagecrawl.errors import ConfigError
from imagecrawl.optout.rules import DEFAULT_DIRECTIVES, KNOWN_DIRECTIVES
from imagecrawl.state import state_dir_for
from imagecrawl.tuning import DEFAULTS, tuning

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OptOutConfig:
    enabled: bool = defaults.IMAGECRAWL_OPTOUT_ENABLED
    x_robots_tag: bool = DEFAULTS.optout_x_robots_tag
    meta_robots: bool = DEFAULTS.optout_meta_robots
    tdmrep: bool = DEFAULTS.optout_tdmrep
    content_signal: bool = DEFAULTS.optout_content_signal
    content_usage: bool = DEFAULTS.optout_content_usage
    embedded: bool = DEFAULTS.optout_embedded
    directives: frozenset[str] = DEFAULT_DIRECTIVES
    token: str = UA_TOKEN
    log_path: Path | None = None
    #: hosts (and their subdomains) the user owns: no opt-out rule, robots.txt included, applies there
    owned_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any) -> OptOutConfig:
        raw_directives = settings.getlist("IMAGECRAWL_OPTOUT_DIRECTIVES")
        directives = frozenset(d.strip().lower() for d in raw_directives if d.strip())
        unknown = directives - KNOWN_DIRECTIVES
        if unknown:
            raise ConfigError(
                f"IMAGECRAWL_OPTOUT_DIRECTIVES: unknown {sorted(unknown)}; known: {sorted(KNOWN_DIRECTIVES)}"
            )
        raw_log = str(settings.get("IMAGECRAWL_OPTOUT_LOG"))
        log_path: Path | None
        if raw_log == "-":
            log_path = None
        elif raw_log:
            log_path = Path(raw_log)
        else:
            store = str(settings.get("IMAGECRAWL_STORE"))
            log_path = state_dir_for(store, settings.get("IMAGECRAWL_STATE_DIR")) / "optout.jsonl"
        token = str(settings.get("ROBOTSTXT_USER_AGENT") or UA_TOKEN).split("/", 1)[0].strip().lower()
        return cls(
            enabled=settings.getbool("IMAGECRAWL_OPTOUT_ENABLED"),
            x_robots_tag=tuning(settings).optout_x_robots_tag,
            meta_robots=tuning(settings).optout_meta_robots,
            tdmrep=tuning(settings).optout_tdmrep,
            content_signal=tuning(settings).optout_content_signal,
            content_usage=tuning(settings).optout_content_usage,
            embedded=tuning(settings).optout_embedded,
            directives=directives,
            token=token or UA_TOKEN,
            log_path=log_path,
            owned_hosts=frozenset(
                h.strip().lower().rstrip(".") for h in settings.getlist("IMAGECRAWL_OPTOUT_OWNED_HOSTS") if h.strip()
            ),
        )

    def owns(self, url: str) -> bool:
        """True for a URL on a host the user declared as their own."""
        if not self.owned_hosts:
            return False
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
        return any(host == h or host.endswith("." + h) for h in self.owned_hosts)

    def robots_kinds(self) -> tuple[str, ...]:
        """The robots.txt preference lines honoured (``content-signal``, ``content-usage``)."""
        kinds = (("content-signal", self.content_signal), ("content-usage", self.content_usage))
        return tuple(kind for kind, on in kinds if on)

    def warn_disabled(self) -> None:
        """Switching a rule off is never silent."""
        for name, on in (
            ("IMAGECRAWL_TUNING['optout_x_robots_tag']", self.x_robots_tag),
            ("IMAGECRAWL_TUNING['optout_meta_robots']", self.meta_robots),
            ("IMAGECRAWL_TUNING['optout_tdmrep']", self.tdmrep),
            ("IMAGECRAWL_TUNING['optout_content_signal']", self.content_signal),
            ("IMAGECRAWL_TUNING['optout_content_usage']", self.content_usage),
            ("IMAGECRAWL_TUNING['optout_embedded']", self.embedded),
        ):
            if not on:
                logger.warning("%s is off: that opt-out is NOT honoured (only for sites you own)", name)
        if self.owned_hosts:
            logger.warning(
                "IMAGECRAWL_OPTOUT_OWNED_HOSTS: robots.txt and opt-outs are NOT honoured on %s (sites you own)",
                ", ".join(sorted(self.owned_hosts)),
            )
        if not self.directives and (self.x_robots_tag or self.meta_robots):
            logger.warning("IMAGECRAWL_OPTOUT_DIRECTIVES is empty: no robots directive opts anything out")
