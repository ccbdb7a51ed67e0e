"""AI usage preferences: the IETF aipref vocabulary and Cloudflare Content Signals. Pure: no Scrapy.

* **Content-Usage** (draft-ietf-aipref-vocab / -attach): a preference list in the RFC 9651
  *dictionary* syntax, ``train-ai=n, search=y``: keys are vocabulary categories, values the tokens
  ``y`` / ``n``. It is sent as the ``Content-Usage`` HTTP response header or written as
  ``Content-Usage: [path] prefs`` lines in robots.txt. Categories nest: ``train-genai`` (training
  generative models) is a part of ``train-ai`` (training any AI model), itself a part of ``bots``
  (all automated processing, the root category); a statement about the more specific category
  overrides the general one, an unstated one inherits it.
* **Content-Signal** (Cloudflare's Content Signals Policy): ``Content-Signal: search=yes,
  ai-input=yes, ai-train=no`` lines in robots.txt; ``ai-train`` is the one about training.

imagecrawl builds datasets for training (generative) models, so what it asks is "may this be used to
train a generative model?": ``train-genai`` for Content-Usage, ``ai-train`` for Content-Signal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

#: The categories whose "no" stops a crawl for a generative-training dataset, most specific first.
TRAINING_CATEGORIES: Final = ("train-genai", "train-ai", "bots")
#: The Content-Signal key about training.
SIGNAL_TRAIN: Final = "ai-train"

_KEY_RE: Final = re.compile(r"^[a-z*][a-z0-9_.*-]*$")
_MAX_MEMBERS: Final = 64


def parse_usage_dictionary(value: str) -> dict[str, str] | None:
    """An RFC 9651 dictionary of aipref tokens: ``"train-ai=n, search=y"`` → ``{"train-ai": "n", ...}``.

    Values are returned lower-cased (``y``/``n``; other tokens kept as they are for the caller to
    ignore). A bare key is boolean true (``?1``) per RFC 9651 and kept as ``"?1"``; parameters
    (``;…``) are dropped; a later duplicate key replaces an earlier one. A field that does not parse
    yields ``None`` (RFC 9651: a field that fails to parse is ignored as a whole).
    """
    out: dict[str, str] = {}
    text = value.strip(" \t")
    if not text:
        return out
    for member in _split_members(text):
        member = member.strip(" \t")
        if not member:
            return None  # empty member (``a=y,,b=n``): not a valid dictionary
        item = member.split(";", 1)[0].strip(" \t")
        key, sep, raw = item.partition("=")
        key = key.strip(" \t")
        if not _KEY_RE.match(key):
            return None
        if not sep:
            out[key] = "?1"
            continue
        raw = raw.strip(" \t")
        if not raw or raw[0] == '"' or raw[0] == "(":
            # strings and inner lists are valid RFC 9651 but no aipref value; keep parsing the rest
            out[key] = raw
            continue
        if not re.match(r"^[A-Za-z*?0-9:/.!#$%&'+^_`|~-]+$", raw):
            return None
        out[key] = raw.lower()
        if len(out) > _MAX_MEMBERS:
            break
    return out


def _split_members(text: str) -> list[str]:
    """Split on commas outside of quoted strings and parentheses."""
    parts: list[str] = []
    depth, quoted, escape, start = 0, False, False, 0
    for i, ch in enumerate(text):
        if quoted:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_content_usage_header(values: Iterable[str]) -> dict[str, str] | None:
    """The ``Content-Usage`` response header (all its field lines combined, as RFC 9110 says)."""
    lines = [v for v in values if v.strip()]
    if not lines:
        return None
    return parse_usage_dictionary(", ".join(lines))


def usage_refuses_training(prefs: dict[str, str] | None) -> str | None:
    """The category that says "no" to training a generative model, else None.

    The most specific stated category decides: ``train-ai=n, train-genai=y`` allows it,
    ``train-ai=n`` alone refuses it (``train-genai`` inherits), ``train-genai=n`` refuses it.
    """
    if not prefs:
        return None
    for category in TRAINING_CATEGORIES:
        value = prefs.get(category)
        if value == "n":
            return category
        if value == "y":
            return None
    return None


def parse_content_signal(value: str) -> dict[str, str]:
    """``"search=yes, ai-train=no"`` → ``{"search": "yes", "ai-train": "no"}`` (keys and values
    lower-cased; members without ``=`` or with an unknown value are left out)."""
    out: dict[str, str] = {}
    for member in value.split(","):
        key, sep, raw = member.partition("=")
        key, raw = key.strip().lower(), raw.strip().lower()
        if sep and key and raw in ("yes", "no"):
            out[key] = raw
    return out


def signal_refuses_training(signals: dict[str, str] | None) -> bool:
    """True when Content Signals say ``ai-train=no``."""
    return signals is not None and signals.get(SIGNAL_TRAIN) == "no"
