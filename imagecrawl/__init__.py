"""imagecrawl: a polite crawler for prompt/image datasets."""

from __future__ import annotations

__version__ = "0.1.0"
#: the product token: first word of the User-Agent, the robots.txt / X-Robots-Tag name matched
UA_TOKEN = "imagecrawl"


def __getattr__(name: str) -> object:
    """``imagecrawl.Addon``, the Scrapy add-on (imported on first use: the pure cores never load Scrapy)."""
    if name == "Addon":
        from imagecrawl.addon import Addon

        return Addon
    raise AttributeError(f"module 'imagecrawl' has no attribute {name!r}")
