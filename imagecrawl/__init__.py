"""imagecrawl: a polite crawler for prompt/image datasets."""

from __future__ import annotations

__version__ = "0.1.0"
#: the product token: first word of the User-Agent, the robots.txt / X-Robots-Tag name matched
UA_TOKEN = "imagecrawl"
