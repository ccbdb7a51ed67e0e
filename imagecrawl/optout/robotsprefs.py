"""``Content-Signal`` and ``Content-Usage`` lines of robots.txt, per group and per path. Pure: no Scrapy.

Scrapy's robots.txt parser (Protego) skips lines it does not know, so these are read from the
robots.txt text here. A line is ``Content-Usage: [path] prefs`` (draft-ietf-aipref-attach) or
``Content-Signal: [path] signals`` (Content Signals Policy); the optional path uses robots.txt
pattern syntax (``*``, ``$``).

Which lines apply to a URL (see docs/optout.md, "Precedence"):

1. **Group**: the groups naming our product token, else the ``*`` groups (RFC 9309 §2.2.1); lines
   before the first ``User-agent`` line are read as part of the ``*`` group.
2. **Per key, per path**: each preference key (``ai-train``, ``train-ai``, ``train-genai``, ...) is
   decided on its own. Of the lines of one kind in those groups that *state* the key, the ones whose
   path matches with the longest pattern decide it (as Allow/Disallow do); a line without a path is
   site-wide and loses to any matching path-scoped line that states the key. A line that says nothing
   about a key leaves that key alone: ``Content-Signal: ai-train=no`` then ``Content-Signal: /img/
   search=yes`` still refuses training under ``/img/``. Equally long lines that disagree: "no" wins.
3. **"No" wins** across kinds: a refusal by either kind refuses the URL.

Whitespace is RFC 9309's: spaces and tabs, anywhere between the fields of a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from imagecrawl.optout.aipref import (
    SIGNAL_TRAIN,
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


_WS: Final = " \t"
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")


def _pref_line(kind: str, value: str) -> PrefLine:
    path: str | None = None
    rest = value.strip(_WS)
    parts = rest.split(None, 1)
    head = parts[0] if parts else ""
    tail = parts[1] if len(parts) > 1 else ""
    if head.startswith("/") or (head.startswith("*") and "=" not in head):
        path, rest = head, tail.strip(_WS)
    prefs = parse_content_signal(rest) if kind == CONTENT_SIGNAL else (parse_usage_dictionary(rest) or {})
    return PrefLine(kind, path, prefs, value.strip(_WS))


def parse_robots_prefs(text: str) -> RobotsPrefs:
    """The Content-Signal / Content-Usage lines of a robots.txt text, grouped (never raises)."""
    result = RobotsPrefs()
    preamble: list[PrefLine] = []
    agents: set[str] = set()
    lines: list[PrefLine] | None = None
    in_agents = False
    for raw in _LINE_BREAK.split(text[:MAX_ROBOTS_CHARS]):
        line = raw.split("#", 1)[0].strip(_WS)
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip(_WS).lower()
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


#: the values of a key that count as a statement about it (anything else says nothing about it)
_STATED: Final = {CONTENT_SIGNAL: ("yes", "no"), CONTENT_USAGE: ("y", "n")}
_REFUSE: Final = {CONTENT_SIGNAL: "no", CONTENT_USAGE: "n"}


def decide_keys(lines: list[PrefLine], path: str) -> dict[str, tuple[str, PrefLine]]:
    """Each preference key stated by ``lines`` that apply to ``path``: its value and the line that
    decided it. The longest matching path among the lines that state the key wins; a site-wide line
    counts as length 0; among equally long ones a refusal wins."""
    decided: dict[str, tuple[int, str, PrefLine]] = {}
    for line in lines:
        if line.path is None:
            length = 0
        elif location_matches(line.path, path):
            length = len(line.path)
        else:
            continue
        stated, refuse = _STATED[line.kind], _REFUSE[line.kind]
        for key, value in line.prefs.items():
            if value not in stated:
                continue
            best = decided.get(key)
            if best is None or length > best[0] or (length == best[0] and value == refuse and best[1] != refuse):
                decided[key] = (length, value, line)
    return {key: (value, line) for key, (_, value, line) in decided.items()}


def robots_refusal(
    prefs: RobotsPrefs | None, token: str, url: str, kinds: tuple[str, ...] = _KINDS
) -> tuple[str, str] | None:
    """``(reason, detail)`` when the lines of ``kinds`` refuse training on ``url``, else None."""
    if not prefs:
        return None
    path = url_path(url)
    for kind in kinds:
        decided = decide_keys(prefs.lines_for(token, kind), path)
        if not decided:
            continue
        values = {key: value for key, (value, _) in decided.items()}
        if kind == CONTENT_SIGNAL and signal_refuses_training(values):
            return "content_signal", decided[SIGNAL_TRAIN][1].text
        if kind == CONTENT_USAGE:
            category = usage_refuses_training(values)
            if category is not None:
                return "content_usage", decided[category][1].text
    return None
