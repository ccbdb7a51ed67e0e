"""``Content-Signal`` and ``Content-Usage`` lines of robots.txt, per group and per path. Pure: no Scrapy.

Scrapy's robots.txt parser (Protego) skips lines it does not know, so these are read from the
robots.txt text here. A line is ``Content-Usage: [path] prefs`` (draft-ietf-aipref-attach) or
``Content-Signal: [path] signals`` (Content Signals Policy); the optional path uses robots.txt
pattern syntax (``*``, ``$``).

Which lines apply to a URL (see docs/optout.md, "Precedence"):

1. **Group**: the groups naming our product token, else the ``*`` groups (RFC 9309 §2.2.1); lines
   before the first ``User-agent`` line are read as part of the ``*`` group.
2. **Path**: of the lines of one kind in those groups, the ones whose path matches with the longest
   pattern win (as Allow/Disallow do); a line without a path is site-wide and loses to any matching
   path-scoped line. Several equally long winners are all applied.
3. **"No" wins**: any applicable line of either kind that refuses training refuses the URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from imagecrawl.optout.aipref import (
    parse_content_signal,
    parse_usage_dictionary,
    signal_refuses_training,
    usage_refuses_training,
)
from imagecrawl.optout.tdmrep import location_matches, url_path

CONTENT_SIGNAL: Final = "content-signal"
CONTENT_USAGE: Final = "content-usage"
_KINDS: Final = (CONTENT_SIGNAL, CONTENT_USAGE)
#: robots.txt bigger than this is read up to here (Google reads 500 KiB).
MAX_ROBOTS_CHARS: Final = 512 * 1024


@dataclass(frozen=True, slots=True)
class PrefLine:
    kind: str  # CONTENT_SIGNAL or CONTENT_USAGE
    path: str | None  # None: site-wide
    prefs: dict[str, str]  # parsed preferences; empty when the line did not parse
    text: str  # the line's value as written (for the skip log)


@dataclass(slots=True)
class RobotsPrefs:
    """The preference lines of one robots.txt, by group (user-agent tokens, ``*`` included)."""

    groups: list[tuple[frozenset[str], list[PrefLine]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(lines for _, lines in self.groups)

    def lines_for(self, token: str, kind: str) -> list[PrefLine]:
        """The lines of ``kind`` addressed to ``token`` (its own groups, else ``*``)."""
        token = token.lower()
        own = [line for agents, lines in self.groups if token in agents for line in lines if line.kind == kind]
        if own:
            return own
        return [line for agents, lines in self.groups if "*" in agents for line in lines if line.kind == kind]


def _agent_token(value: str) -> str:
    return value.strip().split("/", 1)[0].split()[0].lower() if value.strip() else ""


def _pref_line(kind: str, value: str) -> PrefLine:
    path: str | None = None
    rest = value.strip()
    head, _, tail = rest.partition(" ")
    if (head.startswith("/") or head.startswith("*")) and "=" not in head:
        path, rest = head, tail.strip()
    prefs = parse_content_signal(rest) if kind == CONTENT_SIGNAL else (parse_usage_dictionary(rest) or {})
    return PrefLine(kind, path, prefs, value.strip())


def parse_robots_prefs(text: str) -> RobotsPrefs:
    """The Content-Signal / Content-Usage lines of a robots.txt text, grouped (never raises)."""
    result = RobotsPrefs()
    preamble: list[PrefLine] = []
    agents: set[str] = set()
    lines: list[PrefLine] | None = None
    in_agents = False
    for raw in text[:MAX_ROBOTS_CHARS].splitlines():
        line = raw.split("#", 1)[0].strip()
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name in ("user-agent", "useragent", "user agent"):
            if not in_agents:
                agents, lines = set(), []
                result.groups.append((frozenset(), lines))
                in_agents = True
            token = _agent_token(value)
            if token:
                agents.add(token)
                result.groups[-1] = (frozenset(agents), result.groups[-1][1])
            continue
        in_agents = False
        if name in _KINDS:
            pref = _pref_line(name, value)
            (preamble if lines is None else lines).append(pref)
    if preamble:
        result.groups.insert(0, (frozenset({"*"}), preamble))
    return result


def _applicable(lines: list[PrefLine], path: str) -> list[PrefLine]:
    best: list[PrefLine] = []
    best_len = -1
    for line in lines:
        if line.path is None:
            length = 0
        elif location_matches(line.path, path):
            length = len(line.path)
        else:
            continue
        if length > best_len:
            best, best_len = [line], length
        elif length == best_len:
            best.append(line)
    return best


def robots_refusal(
    prefs: RobotsPrefs | None, token: str, url: str, kinds: tuple[str, ...] = _KINDS
) -> tuple[str, str] | None:
    """``(reason, detail)`` when the lines of ``kinds`` refuse training on ``url``, else None."""
    if not prefs:
        return None
    path = url_path(url)
    for kind in kinds:
        for line in _applicable(prefs.lines_for(token, kind), path):
            if kind == CONTENT_SIGNAL and signal_refuses_training(line.prefs):
                return "content_signal", line.text
            if kind == CONTENT_USAGE and usage_refuses_training(line.prefs):
                return "content_usage", line.text
    return None
