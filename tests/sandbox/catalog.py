"""Deterministic catalog of the sandbox site: entries, prompts, parameters and pictures.

Pure functions only: no server, no Scrapy.  ``build_catalog(items, seed)`` always returns the
same entries for the same arguments, and ``render_image`` always returns the same bytes (for a
given Pillow/libwebp build).  Entry ``i`` of a source does not depend on ``items``: a catalog
with fewer items is a prefix of one with more.  Prompt words come from :mod:`.vocabulary`; the
pictures are drawn and encoded by :mod:`.pictures`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import random
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from PIL import Image

from tests.sandbox import vocabulary as words
from tests.sandbox.pictures import draw_picture, encode_picture

logger = logging.getLogger(__name__)

SOURCES = ("civitai", "lexica", "gallery")

#: The fixed "now" of the catalog: every ``created_at`` is before it, ``period`` filters count back from it.
CATALOG_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

NSFW_LEVELS = ("None", "Soft", "Mature", "X")
BROWSING_LEVEL = {"None": 1, "Soft": 2, "Mature": 4, "X": 8}
A1111_VERSION = "v1.10.1"
EXT_FOR_FORMAT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
CONTENT_TYPE_FOR_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

MODELS: dict[str, str] = {  # model name -> civitai baseModel
    "sd_xl_base_1.0": "SDXL 1.0",
    "juggernautXL_v9": "SDXL 1.0",
    "dreamshaper_8": "SD 1.5",
    "realisticVisionV51_v51VAE": "SD 1.5",
    "v1-5-pruned-emaonly": "SD 1.5",
    "ponyDiffusionV6XL": "Pony",
}
SAMPLERS = ("Euler a", "Euler", "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "UniPC", "DPM++ 2M SDE Karras")
STEPS = (20, 20, 25, 28, 30, 30, 40)
CFG_SCALES = (4.5, 5.0, 6.0, 6.5, 7.0, 7.0, 7.5, 8.0, 9.0)
SIDES = (48, 64, 96, 128, 160, 192, 224, 256)

_BLURHASH_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


@dataclass(frozen=True, slots=True)
class Entry:
    source: str
    index: int
    id: str
    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    sampler: str
    cfg_scale: float
    model: str
    width: int
    height: int
    image_format: str
    embed_metadata: bool
    show_meta: bool
    nsfw_level: str
    username: str
    created_at: str
    image_path: str
    same_bytes_as: str | None
    copy_of: str | None

    @property
    def model_hash(self) -> str:
        return model_hash(self.model)

    @property
    def ext(self) -> str:
        return EXT_FOR_FORMAT[self.image_format]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE_FOR_FORMAT[self.image_format]

    def infotext(self) -> str:
        """The A1111 infotext ("parameters") string, exactly as embedded in the file."""
        lines = [self.prompt]
        if self.negative_prompt is not None:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(
            f"Steps: {self.steps}, Sampler: {self.sampler}, CFG scale: {self.cfg_scale}, Seed: {self.seed}, "
            f"Size: {self.width}x{self.height}, Model hash: {self.model_hash}, Model: {self.model}, "
            f"Version: {A1111_VERSION}"
        )
        return "\n".join(lines)


@dataclass
class Catalog:
    items: int
    seed: int
    _by_source: dict[str, list[Entry]] = field(default_factory=dict, repr=False)
    _by_id: dict[tuple[str, str], Entry] = field(default_factory=dict, repr=False)
    #: the newest entries of every source not served yet (``--hidden``; revealed between runs)
    hidden: int = 0
    #: a digest of the entries' overrides (``--overrides``), "" for none: part of the image cache key
    variant: str = ""

    def entries(self, source: str) -> list[Entry]:
        """The served entries of ``source``, newest first (the ``hidden`` newest left out)."""
        if source not in self._by_source:
            raise KeyError(source)
        return list(self._by_source[source][self.hidden :])

    def reveal(self, n: int) -> int:
        """Serve the ``n`` newest hidden entries of every source from now on; how many stay hidden."""
        self.hidden = max(0, self.hidden - max(0, n))
        return self.hidden

    def get(self, source: str, id: str) -> Entry:
        return self._by_id[(source, id)]

    def find(self, source: str, id: str) -> Entry | None:
        entry = self._by_id.get((source, id))
        return entry if entry is not None and entry.index >= self.hidden else None

    def lexica_search(self, q: str, limit: int = 50) -> list[Entry]:
        """Lexica entries whose prompt contains every whitespace-separated word of ``q``
        (case-insensitive substring match), in catalog order, at most ``limit``."""
        words = [w.casefold() for w in q.split()]
        if not words:
            return []
        out: list[Entry] = []
        for e in self.entries("lexica"):
            p = e.prompt.casefold()
            if all(w in p for w in words):
                out.append(e)
                if len(out) >= limit:
                    break
        return out


# --- helpers ------------------------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).digest()


def model_hash(model: str) -> str:
    return hashlib.sha256(str(model).encode("utf-8", "surrogatepass")).hexdigest()[:10]


def base_model(model: str) -> str:
    return MODELS.get(model, "Other")


@functools.lru_cache(maxsize=16384)
def blurhash_placeholder(entry: Entry) -> str:
    """A BlurHash-looking 28 character string (deterministic, *not* derived from the pixels)."""
    d = _digest("blurhash", entry.source, entry.id) * 2
    return "".join(_BLURHASH_ALPHABET[b % 83] for b in d[:28])


@functools.lru_cache(maxsize=16384)
def civitai_stats(entry: Entry) -> dict[str, int]:
    """Deterministic reaction counts (cached: treat the dict as read-only)."""
    d = _digest("stats", entry.source, entry.id)
    return {
        "cryCount": d[0] % 5,
        "laughCount": d[1] % 12,
        "likeCount": (d[2] << 2 | d[3] >> 6) % 900,
        "dislikeCount": 0,
        "heartCount": d[4] % 150,
        "commentCount": d[5] % 30,
    }


def civitai_post_id(entry: Entry) -> int:
    return 500_000 + entry.index // 3 * 11 + int.from_bytes(_digest("post", entry.id)[:1], "big") % 7


def lexica_prompt_id(entry: Entry) -> str:
    return str(uuid.UUID(bytes=_digest("promptid", entry.id)[:16], version=4))


def _make_prompt(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.32:
        subject = rng.choice(words.PORTRAITS)
    elif r < 0.58:
        subject = rng.choice(words.LANDSCAPES)
    elif r < 0.80:
        subject = rng.choice(words.CATS)
    else:
        subject = rng.choice(words.OTHERS)
    parts = [subject, rng.choice(words.STYLES), *rng.sample(words.MODIFIERS, rng.randint(1, 4))]
    if rng.random() < 0.35:
        parts.insert(0, rng.choice(words.WEIGHTED))
    prompt = ", ".join(parts)
    if rng.random() < 0.06:  # occasional multi-line prompt (A1111 keeps the newline)
        prompt += "\n" + ", ".join(rng.sample(words.MODIFIERS, 2))
    return prompt


def _make_id(source: str, index: int, rng: random.Random, taken: set[str]) -> str:
    if source == "civitai":
        return str(1_000_000 + index * 7 + rng.randrange(7))
    if source == "lexica":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    slug = f"{rng.choice(words.SLUG_WORDS)}-{rng.choice(words.SLUG_NOUNS)}-{index:04d}"
    assert slug not in taken
    return slug


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _build_source(source: str, items: int, seed: int) -> list[Entry]:
    rng = random.Random(f"imagecrawl-sandbox:{seed}:{source}")
    entries: list[Entry] = []
    originals: list[Entry] = []  # entries that are neither exact nor near duplicates
    taken: set[str] = set()
    t = CATALOG_NOW - dt.timedelta(minutes=5)
    for index in range(items):
        # time goes backwards: index 0 is the newest entry
        if index:
            t -= dt.timedelta(seconds=rng.expovariate(1 / (2.5 * 86400)))
        created_at = _iso(t)
        entry_id = _make_id(source, index, rng, taken)
        taken.add(entry_id)
        username = f"{rng.choice(words.USERS)}{rng.randrange(100)}" if rng.random() < 0.5 else rng.choice(words.USERS)
        if source == "lexica":
            show_meta = True
            embed = rng.random() < 0.75
        else:
            show_meta = rng.random() >= 0.20
            embed = rng.random() < (0.70 if not show_meta else 0.76)
        dup_roll = rng.random()
        pick = rng.random()
        if originals and dup_roll < 0.07:
            orig = originals[int(pick * len(originals))]
            entry = dataclasses.replace(
                orig,
                index=index,
                id=entry_id,
                show_meta=show_meta,
                username=username,
                created_at=created_at,
                image_path=f"/images/{source}/{entry_id}.{orig.ext}",
                same_bytes_as=orig.id,
            )
            entries.append(entry)
            continue
        if originals and dup_roll < 0.12:
            orig = originals[int(pick * len(originals))]
            if min(orig.width, orig.height) >= 96:  # resized to 50 %, same format
                w, h, fmt = orig.width // 2, orig.height // 2, orig.image_format
            else:  # same size, re-encoded as JPEG q70
                w, h, fmt = orig.width, orig.height, "JPEG"
            entry = dataclasses.replace(
                orig,
                index=index,
                id=entry_id,
                width=w,
                height=h,
                image_format=fmt,
                embed_metadata=False,  # re-encoded copies lose their metadata
                show_meta=show_meta,
                username=username,
                created_at=created_at,
                image_path=f"/images/{source}/{entry_id}.{EXT_FOR_FORMAT[fmt]}",
                copy_of=orig.id,
            )
            entries.append(entry)
            continue
        r = rng.random()
        fmt = "PNG" if r < 0.65 else "JPEG" if r < 0.85 else "WEBP"
        r = rng.random()
        nsfw = "None" if r < 0.80 else "Soft" if r < 0.90 else "Mature" if r < 0.96 else "X"
        entry = Entry(
            source=source,
            index=index,
            id=entry_id,
            prompt=_make_prompt(rng),
            negative_prompt=rng.choice(words.NEGATIVES) if rng.random() < 0.7 else None,
            seed=rng.randrange(2**32),
            steps=rng.choice(STEPS),
            sampler=rng.choice(SAMPLERS),
            cfg_scale=rng.choice(CFG_SCALES),
            model=rng.choice(sorted(MODELS)),
            width=rng.choice(SIDES),
            height=rng.choice(SIDES),
            image_format=fmt,
            embed_metadata=embed,
            show_meta=show_meta,
            nsfw_level=nsfw,
            username=username,
            created_at=created_at,
            image_path=f"/images/{source}/{entry_id}.{EXT_FOR_FORMAT[fmt]}",
            same_bytes_as=None,
            copy_of=None,
        )
        entries.append(entry)
        originals.append(entry)
    return entries


#: the entry fields ``--overrides`` may set (any JSON value: the sandbox serves it as it is)
OVERRIDABLE = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "sampler",
        "cfg_scale",
        "model",
        "username",
        "show_meta",
        "embed_metadata",
    }
)


def check_overrides(overrides: dict[str, dict[str, dict[str, object]]]) -> None:
    """Raise ValueError for an override the catalog cannot apply (unknown source, index or field)."""
    if not isinstance(overrides, dict):
        raise ValueError("overrides must be a JSON object {source: {index: {field: value}}}")
    for source, by_index in overrides.items():
        if source not in SOURCES or not isinstance(by_index, dict):
            raise ValueError(f"overrides: unknown source {source!r} (valid: {', '.join(SOURCES)})")
        for index, fields in by_index.items():
            if not str(index).isdigit() or not isinstance(fields, dict):
                raise ValueError(f"overrides: {source}.{index}: expected an entry index and an object")
            unknown = set(fields) - OVERRIDABLE
            if unknown:
                raise ValueError(f"overrides: {source}.{index}: unknown fields {sorted(unknown)}")


def build_catalog(
    items: int = 200, seed: int = 0, overrides: dict[str, dict[str, dict[str, object]]] | None = None
) -> Catalog:
    """Build the catalog: ``items`` entries PER SOURCE, deterministic in (items, seed).

    ``overrides`` (``--overrides``) replaces fields of chosen entries, ``{source: {index: {field:
    value}}}``, with any value at all: a prompt holding a lone surrogate, a ``cfg_scale`` of 1e308. The
    API serves them as JSON escapes, the HTML and the embedded infotext as UTF-8 with surrogates passed
    through (the invalid bytes a broken writer leaves)."""
    if items < 0:
        raise ValueError("items must be >= 0")
    cat = Catalog(items=items, seed=seed)
    if overrides:
        check_overrides(overrides)
        cat.variant = hashlib.sha256(repr(sorted(overrides.items())).encode("utf-8", "surrogatepass")).hexdigest()
    for source in SOURCES:
        entries = _build_source(source, items, seed)
        for index, fields in (overrides or {}).get(source, {}).items():
            if int(index) < len(entries):
                entries[int(index)] = dataclasses.replace(entries[int(index)], **fields)  # type: ignore[arg-type]
        cat._by_source[source] = entries
        for e in entries:
            cat._by_id[(source, e.id)] = e
    return cat


# --- pictures -----------------------------------------------------------------------------------


def _picture(catalog_seed: int, entry: Entry) -> Image.Image:
    """The RGB picture of an *original* entry."""
    return draw_picture(_digest("picture", catalog_seed, entry.source, entry.id), entry.width, entry.height)


_CACHE_MAX_BYTES = 96 * 1024 * 1024
_cache: OrderedDict[tuple[int, int, str, str, str], bytes] = OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def _render_uncached(catalog: Catalog, entry: Entry) -> bytes:
    if entry.same_bytes_as is not None:
        return render_image(catalog, catalog.get(entry.source, entry.same_bytes_as))
    if entry.copy_of is not None:
        orig = catalog.get(entry.source, entry.copy_of)
        img = _picture(catalog.seed, orig)
        if img.size != (entry.width, entry.height):
            img = img.resize((entry.width, entry.height), Image.Resampling.LANCZOS)
        return encode_picture(img, entry.image_format, None, jpeg_quality=70)
    img = _picture(catalog.seed, entry)
    return encode_picture(img, entry.image_format, entry.infotext() if entry.embed_metadata else None)


def cached_image(catalog: Catalog, entry: Entry) -> bytes | None:
    """The bytes of ``entry`` if ``render_image`` has them cached, else ``None`` (never renders)."""
    key = (catalog.items, catalog.seed, catalog.variant, entry.source, entry.id)
    with _cache_lock:
        data = _cache.get(key)
        if data is not None:
            _cache.move_to_end(key)
        return data


def render_image(catalog: Catalog, entry: Entry) -> bytes:
    """The exact bytes served at ``entry.image_path`` (bounded LRU cache, thread-safe)."""
    global _cache_bytes
    key = (catalog.items, catalog.seed, catalog.variant, entry.source, entry.id)
    with _cache_lock:
        data = _cache.get(key)
        if data is not None:
            _cache.move_to_end(key)
            return data
    data = _render_uncached(catalog, entry)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = data
            _cache_bytes += len(data)
            while _cache_bytes > _CACHE_MAX_BYTES and _cache:
                _, old = _cache.popitem(last=False)
                _cache_bytes -= len(old)
    return data
