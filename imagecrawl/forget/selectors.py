"""What ``imagecrawl forget`` selects: rows by site, URL prefix or pattern, image SHA-256, source account,
or an image file and its near-duplicates. Pure: no Scrapy.

A :class:`Selector` is one user choice (``site example.org``); :class:`Selection` holds them all, resolved
against the store (the account's salted HMAC, the image file's hashes), and gives the mask of the rows of
a shard that go.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from imagecrawl import defaults
from imagecrawl.errors import ConfigError
from imagecrawl.media import MediaError, hamming, probe_image
from imagecrawl.records import author_hash

#: selector kinds, in the spelling of the command line options (``--site`` ...) and of a ``--from`` file
KINDS = ("site", "url-prefix", "sha256", "like", "account")
#: the columns a selection reads from a shard (never the image bytes)
SELECT_COLUMNS = ("id", "page_url", "image_url", "image_sha256", "image_phash", "author_hash")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Selector:
    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


def parse_selector(kind: str, value: str) -> Selector:
    """One selector, checked: :class:`ConfigError` (a one-line usage error) if the value cannot be one."""
    kind = kind.strip().lower().removeprefix("--").replace("_", "-")
    value = value.strip()
    if kind not in KINDS:
        raise ConfigError(f"unknown selector {kind!r}: use one of {', '.join(KINDS)}")
    if not value:
        raise ConfigError(f"selector {kind} needs a value")
    if kind == "site":
        host = (urlsplit(value).hostname if "://" in value else value.split("/", 1)[0].split(":", 1)[0]) or ""
        host = host.lower().rstrip(".")
        if not host or " " in host:
            raise ConfigError(f"--site {value!r} is not a host name (example.org or img.example.org)")
        value = host
    elif kind == "sha256":
        value = value.lower()
        if not _SHA256.match(value):
            raise ConfigError(f"--sha256 {value!r} is not a SHA-256 (64 hexadecimal digits)")
    elif kind == "url-prefix" and "://" not in value:
        raise ConfigError(f"--url-prefix {value!r} is not a URL (https://host/path, * and ? as wildcards)")
    return Selector(kind, value)


def read_selector_file(path: str) -> list[Selector]:
    """Selectors from a file, one a line: ``site example.org``, ``url-prefix https://...``, ``sha256 HEX``,
    ``like image.png``, ``account name`` (also ``kind=value`` and ``--kind value``); ``#`` starts a comment.
    A bare 64-digit hex line is a sha256, a bare URL a URL prefix. A ``like`` path is relative to the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--from {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    out: list[Selector] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if _SHA256.match(line.lower()):
            kind, value = "sha256", line
        elif "://" in line and " " not in line and "=" not in line.split("://", 1)[0]:
            kind, value = "url-prefix", line
        else:
            match = re.match(r"^(?:--)?([A-Za-z0-9_-]+)\s*[=:\s]\s*(.+)$", line)
            if not match:
                raise ConfigError(f"--from {path}:{number}: expected 'KIND VALUE', got {line!r}")
            kind, value = match.group(1), match.group(2)
        try:
            selector = parse_selector(kind, value)
        except ConfigError as exc:
            raise ConfigError(f"--from {path}:{number}: {exc}") from None
        if selector.kind == "like" and not Path(selector.value).is_absolute():
            selector = Selector("like", str(Path(path).parent / selector.value))
        out.append(selector)
    return out


@dataclass(frozen=True, slots=True)
class LikeImage:
    """An image file given with ``--like``: its exact hash and its perceptual hash (if it has one)."""

    path: str
    sha256: str
    phash: int | None


def hash_image_file(path: str) -> LikeImage:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--like {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        facts = probe_image(data)
    except MediaError as exc:
        raise ConfigError(f"--like {path}: not an image this crawler reads ({exc})") from None
    return LikeImage(path, facts.sha256, facts.phash)


def _host_matches(host: str, sites: frozenset[str]) -> bool:
    host = host.lower().rstrip(".")
    while host:
        if host in sites:
            return True
        _, dot, host = host.partition(".")
        if not dot:
            return False
    return False


def _url_matches(url: str, prefixes: Sequence[str], patterns: Sequence[str]) -> bool:
    return any(url.startswith(p) for p in prefixes) or any(fnmatch.fnmatchcase(url, p) for p in patterns)


@dataclass
class Selection:
    """Every selector of one ``forget`` run, resolved (hashes computed). A row goes if any selector takes it."""

    selectors: list[Selector]
    near_distance: int = defaults.IMAGECRAWL_NEAR_MAX_DISTANCE
    sites: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    sha256s: frozenset[str] = frozenset()
    author_hashes: frozenset[str] = frozenset()
    #: account name -> its salted HMAC in this store (what the journal and the audit log keep)
    accounts: dict[str, str] = field(default_factory=dict)
    likes: list[LikeImage] = field(default_factory=list)

    @classmethod
    def resolve(cls, selectors: Iterable[Selector], *, salt: bytes | None, near_distance: int) -> Selection:
        """``salt``: the store's author salt (None: the store has none, so ``account`` selects nothing)."""
        chosen = list(dict.fromkeys(selectors))
        if not chosen:
            raise ConfigError(
                "nothing selected: give at least one of --site, --url-prefix, --sha256, --like, --account or --from"
            )
        of = {kind: [s.value for s in chosen if s.kind == kind] for kind in KINDS}
        prefixes = tuple(v for v in of["url-prefix"] if not any(ch in v for ch in "*?["))
        patterns = tuple(v for v in of["url-prefix"] if any(ch in v for ch in "*?["))
        accounts = {name: h for name in of["account"] if salt and (h := author_hash(name, salt))}
        likes = [hash_image_file(path) for path in of["like"]]
        return cls(
            selectors=chosen,
            near_distance=near_distance,
            sites=frozenset(of["site"]),
            prefixes=prefixes,
            patterns=patterns,
            sha256s=frozenset(of["sha256"]) | {like.sha256 for like in likes},
            author_hashes=frozenset(accounts.values()),
            accounts=accounts,
            likes=likes,
        )

    @property
    def near_hashes(self) -> list[int]:
        """Perceptual hashes whose near-duplicates go (and are refused later): those of ``--like`` images."""
        return [like.phash for like in self.likes if like.phash is not None]

    def by_image(self, row: dict[str, object]) -> bool:
        """Whether a ``--like`` image takes ``row`` (the same file, or a near-duplicate of it)."""
        if any(row.get("image_sha256") == like.sha256 for like in self.likes):
            return True
        phash = row.get("image_phash")
        return isinstance(phash, int) and any(hamming(phash, h) <= self.near_distance for h in self.near_hashes)

    def mask(self, table: pa.Table) -> list[bool]:
        """Which rows of ``table`` (holding :data:`SELECT_COLUMNS`, missing ones read as null) go. Hashes
        and accounts are matched column-wise (Arrow); URLs and near-duplicates row by row, only when a
        selector asks for them."""
        n = table.num_rows

        def column(name: str) -> pa.ChunkedArray | pa.Array:
            return table.column(name) if name in table.column_names else pa.nulls(n, pa.string())

        hits = [False] * n
        for name, values in (("image_sha256", self.sha256s), ("author_hash", self.author_hashes)):
            if values and n:
                found = pc.is_in(column(name), value_set=pa.array(sorted(values), pa.string()))
                hits = [a or bool(b) for a, b in zip(hits, found.to_pylist(), strict=True)]
        if self.sites or self.prefixes or self.patterns:
            pages, images = column("page_url").to_pylist(), column("image_url").to_pylist()
            for i in range(n):
                if hits[i]:
                    continue
                urls = [u for u in (pages[i], images[i]) if u]
                hits[i] = (
                    bool(self.sites) and any(_host_matches(urlsplit(u).hostname or "", self.sites) for u in urls)
                ) or (
                    bool(self.prefixes or self.patterns)
                    and any(_url_matches(u, self.prefixes, self.patterns) for u in urls)
                )
        near = self.near_hashes
        if near and "image_phash" in table.column_names:
            for i, phash in enumerate(table.column("image_phash").to_pylist()):
                if not hits[i] and phash is not None:
                    hits[i] = any(hamming(phash, h) <= self.near_distance for h in near)
        return hits
