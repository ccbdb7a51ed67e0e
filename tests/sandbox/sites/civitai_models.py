"""The Civitai-like models API: ``GET /api/v1/models`` (cursor pagination, sorts, ``nsfw`` boolean) and
``GET /api/v1/models/<id>``, shaped like the real responses (field names as in real captures): models
with ``modelVersions[]``, each with ``files[]`` and showcase ``images[]`` (no prompts: ``hasMeta`` only
says the file has some).

Models are built from the civitai entries, oldest first: every :data:`VERSION_IMAGES` entries make a
version; a version starts a new model or, like a model's author releasing an update, becomes the next
version of one of the :data:`RECENT_MODELS` newest models (at most :data:`MODEL_VERSIONS` each),
decided once per catalog (hidden entries included), so the grouping of an entry never changes.
Entries revealed between runs (``POST /_sandbox/reveal``) are the newest: they add showcase images to
the newest version, then new versions to several existing models and new models. ``sort=Newest``
orders models by their newest version's ``publishedAt`` (Civitai's "last version at": a model that
gained a version comes first again, its old versions below the new one); versions are listed newest
first, a version's images oldest first.
The cursor is keyset-based like the real one (``"<sort value>|<newest version id>|<model id>"``), so
models moving to the top do not shift the pages below.
"""

from __future__ import annotations

import functools
import hashlib
import random
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.sandbox.catalog import (
    BROWSING_LEVEL,
    CATALOG_NOW,
    Catalog,
    Entry,
    base_model,
    blurhash_placeholder,
    civitai_stats,
)
from tests.sandbox.config import CATALOG_KEY
from tests.sandbox.responses import base_url, json_error
from tests.sandbox.sites.civitai import PERIODS, page_limit

VERSION_IMAGES = 3
MODEL_VERSIONS = 4
RECENT_MODELS = 3
#: the share of versions that start a new model
NEW_MODEL_SHARE = 0.45
MAX_LIMIT = 100
DEFAULT_LIMIT = 100
SORTS = ("Highest Rated", "Most Downloaded", "Newest")
DEFAULT_SORT = "Highest Rated"
MODEL_ID_BASE, VERSION_ID_BASE, FILE_ID_BASE = 10_000, 100_000, 200_000


@dataclass(frozen=True)
class Model:
    number: int
    versions: list[tuple[int, list[Entry]]]  # (version number, images oldest first), oldest version first

    @property
    def id(self) -> int:
        return MODEL_ID_BASE + self.number

    @property
    def first(self) -> Entry:
        return self.versions[0][1][0]

    @property
    def images(self) -> list[Entry]:
        return [e for _, version in self.versions for e in version]

    @property
    def last_version_at(self) -> str:
        """The newest version's ``publishedAt`` (a version is published with its first image)."""
        return self.versions[-1][1][0].created_at


@functools.lru_cache(maxsize=32)
def model_of_version(items: int, seed: int) -> tuple[int, ...]:
    """The model number of every version of a catalog (versions and models oldest first)."""
    rng = random.Random(f"imagecrawl-sandbox:{seed}:civitai-models")
    owner: list[int] = []
    sizes: list[int] = []
    for _ in range(-(-items // VERSION_IMAGES)):
        recent = [m for m in range(max(0, len(sizes) - RECENT_MODELS), len(sizes)) if sizes[m] < MODEL_VERSIONS]
        if not recent or rng.random() < NEW_MODEL_SHARE:
            sizes.append(0)
            model = len(sizes) - 1
        else:
            model = rng.choice(recent)
        sizes[model] += 1
        owner.append(model)
    return tuple(owner)


def models(catalog: Catalog) -> list[Model]:
    """The served models, oldest first."""
    owner = model_of_version(catalog.items, catalog.seed)
    grouped: dict[int, dict[int, list[Entry]]] = {}
    for entry in reversed(catalog.entries("civitai")):  # oldest first
        version = (catalog.items - 1 - entry.index) // VERSION_IMAGES
        grouped.setdefault(owner[version], {}).setdefault(version, []).append(entry)
    return [Model(n, sorted(grouped[n].items())) for n in sorted(grouped)]


def _level(entries: list[Entry]) -> int:
    level = 0
    for entry in entries:
        level |= BROWSING_LEVEL[entry.nsfw_level]
    return level


def _downloads(entries: list[Entry]) -> int:
    return sum(civitai_stats(e)["likeCount"] * 7 + civitai_stats(e)["heartCount"] for e in entries)


def _hashes(name: str) -> dict[str, str]:
    sha = hashlib.sha256(name.encode()).hexdigest().upper()
    blake = hashlib.blake2b(name.encode(), digest_size=32).hexdigest().upper()
    return {
        "AutoV1": sha[-8:],
        "AutoV2": sha[:10],
        "SHA256": sha,
        "CRC32": f"{zlib.crc32(name.encode()):08X}",
        "BLAKE3": blake,
        "AutoV3": blake[:12],
    }


def _image(entry: Entry, base: str, with_id: bool, safe_only: bool) -> dict[str, Any] | None:
    level = BROWSING_LEVEL[entry.nsfw_level]
    if safe_only and level > 1:
        return None
    image: dict[str, Any] = {"id": int(entry.id)} if with_id else {}
    image.update(
        {
            "url": base + entry.image_path,
            "nsfwLevel": level,
            "width": entry.width,
            "height": entry.height,
            "hash": blurhash_placeholder(entry),
            "type": "image",
            "minor": False,
            "poi": False,
            "hasMeta": entry.show_meta,
            "hasPositivePrompt": entry.show_meta,
            "onSite": False,
            "remixOfId": None,
        }
    )
    return image


def _version(model: Model, k: int, base: str, safe_only: bool) -> dict[str, Any]:
    number, entries = model.versions[k]
    version_id = VERSION_ID_BASE + number
    file_name = f"{entries[0].model}_sandbox{model.number}v{k + 1}.safetensors"
    published = entries[0].created_at
    downloads = _downloads(entries)
    likes = sum(civitai_stats(e)["likeCount"] for e in entries)
    # the oldest model's images carry no id, like Civitai's 2022-era showcase images
    images = [_image(e, base, with_id=model.number > 0, safe_only=safe_only) for e in entries]
    return {
        "id": version_id,
        "index": len(model.versions) - 1 - k,
        "name": f"v{k + 1}.0",
        "baseModel": base_model(entries[0].model),
        "baseModelType": "Standard",
        "publishedAt": published,
        "availability": "Public",
        "nsfwLevel": _level(entries),
        "description": None if k % 2 else f"<p>Version {k + 1} of the sandbox model {model.number}.</p>",
        "trainedWords": [],
        "stats": {
            "downloadCount": downloads,
            "ratingCount": likes // 20,
            "rating": 4.5 + (number % 5) / 10,
            "thumbsUpCount": likes,
            "thumbsDownCount": likes // 100,
        },
        "supportsGeneration": True,
        "files": [
            {
                "id": FILE_ID_BASE + number,
                "sizeKB": 2_000_000 + (number * 7919 % 5_000_000) + 0.712890625,
                "name": file_name,
                "type": "Model",
                "pickleScanResult": "Success",
                "pickleScanMessage": "No Pickle imports",
                "virusScanResult": "Success",
                "virusScanMessage": None,
                "scannedAt": published,
                "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
                "hashes": _hashes(file_name),
                "downloadUrl": f"{base}/api/download/models/{version_id}",
                "primary": True,
            }
        ],
        "images": [image for image in images if image is not None],
        "downloadUrl": f"{base}/api/download/models/{version_id}",
    }


def model_json(model: Model, base: str, safe_only: bool = False) -> dict[str, Any]:
    first = model.first
    level = _level(model.images)
    likes = sum(civitai_stats(e)["likeCount"] for e in model.images)
    return {
        "id": model.id,
        "name": f"{first.model} sandbox {model.number}",
        "description": f"<p>Sandbox model {model.number}, trained on nothing.</p>",
        "allowNoCredit": True,
        "allowCommercialUse": ["Image"],
        "allowDerivatives": True,
        "allowDifferentLicense": True,
        "type": "Checkpoint",
        "minor": False,
        "sfwOnly": False,
        "poi": False,
        "nsfw": level > 1 and all(BROWSING_LEVEL[e.nsfw_level] > 1 for e in model.images),
        "nsfwLevel": level,
        "availability": "Public",
        "cosmetic": None,
        "supportsGeneration": True,
        "stats": {
            "downloadCount": _downloads(model.images),
            "favoriteCount": 0,
            "thumbsUpCount": likes,
            "thumbsDownCount": likes // 100,
            "commentCount": sum(civitai_stats(e)["commentCount"] for e in model.images),
            "ratingCount": 0,
            "rating": 0,
            "tippedAmountCount": likes * 3,
        },
        "creator": {"username": first.username, "image": None},
        "tags": ["sandbox", base_model(first.model).lower()],
        # newest version first, as Civitai lists them
        "modelVersions": [_version(model, k, base, safe_only) for k in reversed(range(len(model.versions)))],
    }


def _sort_value(model: Model, sort: str) -> int:
    if sort == "Newest":
        return int(model.last_version_at[:19].replace("-", "").replace("T", "").replace(":", ""))
    if sort == "Most Downloaded":
        return _downloads(model.images)
    return sum(civitai_stats(e)["likeCount"] for e in model.images)


def select(catalog: Catalog, query: dict[str, str]) -> list[tuple[int, Model]]:
    """The models of a listing query in listing order, each with its sort value (raises ValueError)."""
    sort = query.get("sort", DEFAULT_SORT)
    if sort not in SORTS:
        raise ValueError(f"invalid sort: {sort!r}")
    period = query.get("period", "AllTime")
    if period not in PERIODS:
        raise ValueError(f"invalid period: {period!r}")
    nsfw = query.get("nsfw")
    if nsfw not in (None, "true", "false"):
        raise ValueError(f"invalid nsfw: {nsfw!r} (a boolean)")
    found = models(catalog)
    span = PERIODS[period]
    if span is not None:
        since = (CATALOG_NOW - span).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        found = [m for m in found if m.last_version_at >= since]
    username = query.get("username")
    if username:
        found = [m for m in found if m.first.username.casefold() == username.casefold()]
    if nsfw == "false":  # hide the models without a safe image
        found = [m for m in found if any(BROWSING_LEVEL[e.nsfw_level] == 1 for e in m.images)]
    keyed = [(_sort_value(m, sort), m) for m in found]
    keyed.sort(key=lambda km: (km[0], km[1].id), reverse=True)
    return keyed


def _after(keyed: list[tuple[int, Model]], cursor: str) -> list[tuple[int, Model]]:
    parts = cursor.split("|")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError("invalid cursor")
    value, model_id = int(parts[0]), int(parts[2])
    return [(v, m) for v, m in keyed if (v, m.id) < (value, model_id)]


async def models_listing(request: web.Request) -> web.Response:
    q = request.query
    limit = page_limit(q, DEFAULT_LIMIT, MAX_LIMIT)
    if isinstance(limit, web.Response):
        return limit
    try:
        keyed = select(request.app[CATALOG_KEY], {k: q[k] for k in q})
        if q.get("cursor"):
            keyed = _after(keyed, q["cursor"])
    except ValueError as exc:
        return json_error(400, str(exc))
    base = base_url(request)
    page = keyed[:limit]
    metadata: dict[str, Any] = {}
    if len(keyed) > limit:
        value, last = page[-1]
        cursor = f"{value}|{VERSION_ID_BASE + last.versions[-1][0]}|{last.id}"
        params = {k: v for k, v in q.items() if k != "cursor"}
        params["cursor"] = cursor
        metadata = {"nextCursor": cursor, "nextPage": f"{base}/api/v1/models?{urlencode(params)}"}
    safe_only = q.get("nsfw") == "false"
    return web.json_response({"items": [model_json(m, base, safe_only) for _, m in page], "metadata": metadata})


async def model_detail(request: web.Request) -> web.Response:
    raw = request.match_info["model_id"]
    found = next((m for m in models(request.app[CATALOG_KEY]) if raw.isdigit() and m.id == int(raw)), None)
    if found is None:
        return json_error(404, f"No model with id {raw}")
    return web.json_response(model_json(found, base_url(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/models", models_listing)
    app.router.add_get("/api/v1/models/{model_id}", model_detail)
