"""imagecrawl: a polite crawler for prompt/image datasets."""

from __future__ import annotations

__version__ = "0.1.0"
