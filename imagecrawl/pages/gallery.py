"""Profile-driven extraction for HTML galleries (listing pages → detail pages → one image). Pure.

A *profile* is a small TOML file describing one site::

    name = "sandbox"                      # profile name (for logs)
    source = "gallery"                    # the dataset ``source`` value
    start_url = "http://127.0.0.1:8765/gallery/"
    render = "http"                       # "http" (default) or "browser" (scrapy-playwright)
    healthy_marker = "div.grid"           # optional: present on every good page (soft-ban detection)

    [listing]
    item_links = "a.card"                 # detail links (elements → their href, or ::attr(href))
    next_page = "a.next[rel=next]"        # optional: the next listing page
    newest_first = true                   # optional: the listing shows the newest items first, so an
                                          # incremental run stops after a run of items the store holds

    [detail]
    image = "figure.artwork img.main"     # the image (elements → src / data-src, or ::attr(...))
    prompt = "p.prompt"                   # optional, text content
    negative_prompt = "p.negative-prompt" # optional
    author = "span.username"              # optional: only its salted hash reaches the record
    params = "dl.params"                  # optional: a <dl> of <dt>name</dt><dd>value</dd> pairs, or
    # params_names = "..." / params_values = "..."   two parallel selectors
    id_pattern = "/item/([^/?#]+)"        # optional regex on the detail URL, group 1 = source_id

    [detail.param_map]                    # optional: extra page labels → hint fields
    "Guidance" = "cfg_scale"

Selectors are CSS by default; prefix ``css:`` or ``xpath:`` to be explicit. Parameter labels map onto
``steps, sampler, cfg_scale, seed, model, prompt, negative_prompt`` (case-insensitive, a trailing ``:``
ignored, see ``DEFAULT_PARAM_MAP``); every other label goes to ``params`` under its label as shown.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

from lxml import etree
from parsel import Selector, SelectorList
from parsel.csstranslator import HTMLTranslator

from imagecrawl.errors import ConfigError
from imagecrawl.pages import ImageEntry, PageError
from imagecrawl.records import SourceHints
from imagecrawl.values import is_http_url, to_float, to_int, to_text

HINT_FIELDS: Final = ("prompt", "negative_prompt", "steps", "sampler", "cfg_scale", "seed", "model")
DEFAULT_PARAM_MAP: Final = {
    "prompt": "prompt",
    "negative prompt": "negative_prompt",
    "negative": "negative_prompt",
    "steps": "steps",
    "sampling steps": "steps",
    "sampler": "sampler",
    "sampling method": "sampler",
    "cfg scale": "cfg_scale",
    "cfg": "cfg_scale",
    "guidance": "cfg_scale",
    "guidance scale": "cfg_scale",
    "seed": "seed",
    "model": "model",
    "checkpoint": "model",
}
RENDERS: Final = ("http", "browser")
_CSS = HTMLTranslator()


@dataclass(frozen=True, slots=True)
class Sel:
    """A parsed selector: ``kind`` is ``css`` or ``xpath``."""

    kind: str
    expr: str

    def select(self, root: Selector | SelectorList[Selector]) -> SelectorList[Selector]:
        return root.css(self.expr) if self.kind == "css" else root.xpath(self.expr)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    source: str
    start_url: str | None
    item_links: Sel
    image: Sel
    next_page: Sel | None = None
    prompt: Sel | None = None
    negative_prompt: Sel | None = None
    author: Sel | None = None
    params: Sel | None = None
    params_names: Sel | None = None
    params_values: Sel | None = None
    id_pattern: re.Pattern[str] | None = None
    param_map: dict[str, str] = field(default_factory=dict)
    render: str = "http"
    healthy_marker: Sel | None = None
    newest_first: bool = False
    path: str = "<memory>"


@dataclass(slots=True)
class Listing:
    detail_urls: list[str] = field(default_factory=list)
    next_url: str | None = None
    #: False when the profile has a ``healthy_marker`` and the page lacks it; None without a marker
    healthy: bool | None = None


def parse_selector(value: Any, where: str) -> Sel:
    """``css:EXPR`` / ``xpath:EXPR`` / plain CSS → :class:`Sel` (``ValueError`` names ``where``)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty selector string, got {value!r}")
    text = value.strip()
    prefix, _, rest = text.partition(":")
    if prefix in ("css", "xpath") and rest.strip():
        kind, expr = prefix, rest.strip()
    else:
        kind, expr = "css", text
    try:
        xpath = _CSS.css_to_xpath(expr) if kind == "css" else expr
        etree.XPath(xpath)
    except Exception as exc:
        raise ConfigError(f"{where}: invalid {kind} selector {expr!r}: {exc}") from None
    return Sel(kind, expr)


# ---------------------------------------------------------------- profiles


def bundled_profiles() -> list[str]:
    """Names of the profiles shipped in ``imagecrawl/profiles/``."""
    root = resources.files("imagecrawl") / "profiles"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(ref: str | Path) -> Profile:
    """A profile from a TOML file path, or the name of a bundled profile (``sandbox``)."""
    text_ref = str(ref)
    path = Path(text_ref)
    if path.suffix == ".toml" or path.exists() or "/" in text_ref or "\\" in text_ref:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{text_ref}: cannot read profile: {exc.strerror or exc}") from None
        return profile_from_toml(data.decode("utf-8", "replace"), str(path))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text_ref):
        raise ConfigError(f"{text_ref!r}: not a profile file or bundled profile name")
    resource = resources.files("imagecrawl") / "profiles" / f"{text_ref}.toml"
    if not resource.is_file():
        raise ConfigError(
            f"{text_ref!r}: no such profile file, and no bundled profile of that name "
            f"(bundled: {', '.join(bundled_profiles()) or 'none'})"
        )
    return profile_from_toml(resource.read_text("utf-8"), f"imagecrawl/profiles/{text_ref}.toml")


def profile_from_toml(text: str, path: str = "<memory>") -> Profile:
    """Parse and validate profile TOML; every problem is a ``ValueError`` naming the file and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    def table(key: str, required: bool) -> dict[str, Any]:
        value = data.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{key}] table is required")
        return value

    def string(tbl: dict[str, Any], key: str, where: str, required: bool) -> str | None:
        value = tbl.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: {where} must be a non-empty string, got {value!r}")
        return value.strip()

    def selector(tbl: dict[str, Any], key: str, section: str, required: bool = False) -> Sel | None:
        if tbl.get(key) is None and not required:
            return None
        if key not in tbl:
            raise ConfigError(f"{path}: {section}.{key} is required")
        return parse_selector(tbl[key], f"{path}: {section}.{key}")

    listing = table("listing", True)
    detail = table("detail", True)
    name = string(data, "name", "name", True)
    source = string(data, "source", "source", True)
    assert name is not None and source is not None
    if not re.fullmatch(r"[a-z0-9_.-]+", source):
        raise ConfigError(f"{path}: source must be lower-case [a-z0-9_.-], got {source!r}")
    start_url = string(data, "start_url", "start_url", False)
    if start_url is not None and not is_http_url(start_url):
        raise ConfigError(f"{path}: start_url must be an http(s) URL, got {start_url!r}")
    render = string(data, "render", "render", False) or "http"
    if render not in RENDERS:
        raise ConfigError(f"{path}: render must be one of {', '.join(RENDERS)}, got {render!r}")
    params_names = selector(detail, "params_names", "detail")
    params_values = selector(detail, "params_values", "detail")
    if (params_names is None) != (params_values is None):
        raise ConfigError(f"{path}: detail.params_names and detail.params_values go together")
    pattern_text = string(detail, "id_pattern", "detail.id_pattern", False)
    id_pattern = None
    if pattern_text is not None:
        try:
            id_pattern = re.compile(pattern_text)
        except re.error as exc:
            raise ConfigError(f"{path}: detail.id_pattern is not a valid regex: {exc}") from None
        if id_pattern.groups < 1:
            raise ConfigError(f"{path}: detail.id_pattern needs one capturing group")
    raw_map = detail.get("param_map", {})
    if not isinstance(raw_map, dict):
        raise ConfigError(f"{path}: [detail.param_map] must be a table of label = field")
    param_map: dict[str, str] = {}
    for label, target in raw_map.items():
        if target not in HINT_FIELDS:
            raise ConfigError(
                f"{path}: detail.param_map.{label} must be one of {', '.join(HINT_FIELDS)}, got {target!r}"
            )
        param_map[_label_key(label)] = target
    newest_first = listing.get("newest_first", False)
    if not isinstance(newest_first, bool):
        raise ConfigError(f"{path}: listing.newest_first must be true or false, got {newest_first!r}")
    item_links = selector(listing, "item_links", "listing", required=True)
    image = selector(detail, "image", "detail", required=True)
    assert item_links is not None and image is not None
    return Profile(
        name=name,
        source=source,
        start_url=start_url,
        item_links=item_links,
        next_page=selector(listing, "next_page", "listing"),
        newest_first=newest_first,
        image=image,
        prompt=selector(detail, "prompt", "detail"),
        negative_prompt=selector(detail, "negative_prompt", "detail"),
        author=selector(detail, "author", "detail"),
        params=selector(detail, "params", "detail"),
        params_names=params_names,
        params_values=params_values,
        id_pattern=id_pattern,
        param_map=param_map,
        render=render,
        healthy_marker=parse_selector(data["healthy_marker"], f"{path}: healthy_marker")
        if data.get("healthy_marker") is not None
        else None,
        path=path,
    )


# ---------------------------------------------------------------- extraction


def _selector(html: str | bytes | Selector, url: str) -> Selector:
    if isinstance(html, Selector):
        return html
    if isinstance(html, bytes):
        return Selector(body=html, type="html", base_url=url)
    return Selector(text=html, type="html", base_url=url)


def _values(found: SelectorList[Selector], attrs: tuple[str, ...]) -> list[str]:
    """Strings from a selection: text/attribute nodes as they are; elements → the first of ``attrs``
    they carry, else (no attrs wanted) their whole text content."""
    out: list[str] = []
    for node in found:
        if isinstance(node.root, str):
            value: str | None = node.root
        elif attrs:
            value = next((node.attrib[a] for a in attrs if node.attrib.get(a, "").strip()), None)
        else:
            value = "".join(node.xpath(".//text()").getall())
        if value is not None and value.strip():
            out.append(value.strip())
    return out


def _urls(found: SelectorList[Selector], base: str, attrs: tuple[str, ...]) -> list[str]:
    urls: list[str] = []
    for value in _values(found, attrs):
        absolute = urljoin(base, value).split("#", 1)[0]
        if is_http_url(absolute) and absolute not in urls:
            urls.append(absolute)
    return urls


def _healthy(profile: Profile, sel: Selector) -> bool | None:
    if profile.healthy_marker is None:
        return None
    return bool(profile.healthy_marker.select(sel))


def parse_listing(html: str | bytes | Selector, url: str, profile: Profile) -> Listing:
    """Detail links (absolute, unique, in page order) and the next listing page of one listing page."""
    sel = _selector(html, url)
    listing = Listing(healthy=_healthy(profile, sel))
    listing.detail_urls = _urls(profile.item_links.select(sel), url, ("href",))
    if profile.next_page is not None:
        nxt = _urls(profile.next_page.select(sel), url, ("href",))
        listing.next_url = nxt[0] if nxt and nxt[0] != url else None
    return listing


def _label_key(label: str) -> str:
    return " ".join(label.strip().rstrip(":").split()).lower()


def detail_id(url: str, profile: Profile) -> str:
    """The stable ``source_id`` of a detail page: group 1 of ``detail.id_pattern`` on the URL if the
    profile has one and it matches; else the last non-empty path segment (``/gallery/item/ab12`` →
    ``ab12``), with the query string appended as ``?query`` when there is one; else (a bare host
    page) ``url-`` + the first 16 hex of sha256 of the URL."""
    if profile.id_pattern is not None:
        match = profile.id_pattern.search(url)
        if match and match.group(1):
            return match.group(1)
    parts = urlsplit(url)
    segment = next((s for s in reversed(parts.path.split("/")) if s), "")
    if segment:
        return f"{segment}?{parts.query}" if parts.query else segment
    return "url-" + hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _param_pairs(profile: Profile, sel: Selector) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if profile.params is not None:
        for dl in profile.params.select(sel):
            label: str | None = None
            for child in dl.xpath("./*[self::dt or self::dd] | ./div/*[self::dt or self::dd]"):
                text = "".join(child.xpath(".//text()").getall()).strip()
                if child.root.tag == "dt":
                    label = text
                elif label is not None:
                    pairs.append((label, text))
                    label = None
    if profile.params_names is not None and profile.params_values is not None:
        names = _values(profile.params_names.select(sel), ())
        values = _values(profile.params_values.select(sel), ())
        pairs.extend(zip(names, values, strict=False))
    return pairs


def parse_detail(html: str | bytes | Selector, url: str, profile: Profile) -> tuple[ImageEntry, bool | None]:
    """The image of one detail page with its hints (``origin="html"``, ``page_url`` = ``url``) and the
    healthy-marker verdict. Raises ``PageError('missing_element')`` when the page has no image."""
    sel = _selector(html, url)
    healthy = _healthy(profile, sel)
    images = _urls(profile.image.select(sel), url, ("src", "data-src"))
    if not images:
        raise PageError("missing_element", f"{url}: no image matches {profile.image.expr!r}")
    found: dict[str, str] = {}

    def first_text(s: Sel | None) -> str | None:
        if s is None:
            return None
        values = _values(s.select(sel), ())
        return values[0] if values else None

    if (prompt := first_text(profile.prompt)) is not None:
        found["prompt"] = prompt
    if (negative := first_text(profile.negative_prompt)) is not None:
        found["negative_prompt"] = negative
    params: dict[str, Any] = {}
    for label, value in _param_pairs(profile, sel):
        key = _label_key(label)
        target = profile.param_map.get(key) or DEFAULT_PARAM_MAP.get(key)
        if target and target not in found:
            found[target] = value
        elif label.strip():
            params[label.strip().rstrip(":").strip()] = value

    def typed(name: str, convert: Any) -> Any:
        raw = found.get(name)
        value = convert(raw)
        if value is None and raw:
            params[name] = raw  # shown but not a number: keep it, untyped
        return value

    hints = SourceHints(
        source=profile.source,
        source_id=detail_id(url, profile),
        page_url=url,
        prompt=to_text(found.get("prompt")),
        negative_prompt=to_text(found.get("negative_prompt")),
        steps=typed("steps", to_int),
        seed=typed("seed", to_int),
        cfg_scale=typed("cfg_scale", to_float),
        sampler=to_text(found.get("sampler")),
        model=to_text(found.get("model")),
        author=first_text(profile.author),
        origin="html",
        params=params,
    )
    return ImageEntry(url=images[0], hints=hints), healthy
