"""Civitai REST API page objects: ``GET /api/v1/images`` and ``GET /api/v1/models[/<id>]``. Pure.

``/api/v1/images`` (``withMeta=true``) items carry the generation ``meta`` (may be null or absent);
``/api/v1/models`` items carry ``modelVersions[].images[]`` *without* meta (prompts then come from the
image file itself), and older images there have no ``id`` at all (see ``source_id_from_url``).
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from imagecrawl.pages import ImageEntry, PageError, ParsedPage, load_json
from imagecrawl.records import SourceHints
from imagecrawl.values import is_http_url, to_float, to_int, to_text

SOURCE: Final = "civitai"
DEFAULT_API_URL: Final = "https://civitai.com"
MAX_LIMIT: Final = 200
#: The ``nsfw`` filter values of ``/api/v1/images`` (each means "this level and below").
NSFW_LEVELS: Final = ("None", "Soft", "Mature", "X")
#: The ``/api/v1/models`` image ``nsfwLevel`` bitmask (PG=1, PG-13=2, R=4, X=8, XXX=16) that each
#: ``nsfw`` filter value allows at most; ``X`` (and no filter) allow everything.
MODELS_MAX_LEVEL: Final = {"None": 1, "Soft": 2, "Mature": 4}

#: meta keys that map onto SourceHints fields; every other meta key goes to ``params``.
_META_FIELDS: Final = {"prompt", "negativePrompt", "seed", "steps", "sampler", "cfgScale", "Model"}
#: top-level /images keys that go to ``params`` (username is never copied: only its salted hash is kept).
_IMAGE_PARAMS: Final = ("baseModel", "postId", "createdAt", "browsingLevel", "modelVersionIds", "type")
_MODEL_IMAGE_PARAMS: Final = ("type", "hasMeta", "hasPositivePrompt", "onSite", "remixOfId", "minor", "poi")
_URL_ID: Final = re.compile(r"^(\d+)(?:\.[A-Za-z0-9]+)?$")


def _base(api_url: str) -> str:
    return api_url.rstrip("/")


def image_page_url(api_url: str, image_id: str) -> str:
    return f"{_base(api_url)}/images/{image_id}"


def images_api_url(
    api_url: str,
    *,
    limit: int = 100,
    nsfw: str | None = "None",
    sort: str | None = "Newest",
    period: str | None = "AllTime",
    username: str | None = None,
    model_id: str | int | None = None,
    cursor: str | None = None,
) -> str:
    """The first (or, with ``cursor``, a later) ``/api/v1/images`` URL. ``nsfw=None`` omits the filter."""
    query: list[tuple[str, str]] = [("limit", str(limit)), ("withMeta", "true")]
    if nsfw:
        query.append(("nsfw", nsfw))
    if sort:
        query.append(("sort", sort))
    if period:
        query.append(("period", period))
    if username:
        query.append(("username", username))
    if model_id is not None and str(model_id):
        query.append(("modelId", str(model_id)))
    if cursor:
        query.append(("cursor", cursor))
    return f"{_base(api_url)}/api/v1/images?{urlencode(query)}"


def models_api_url(
    api_url: str,
    *,
    limit: int = 100,
    nsfw: str | None = "None",
    sort: str | None = "Newest",
    period: str | None = "AllTime",
    username: str | None = None,
    model_id: str | int | None = None,
    cursor: str | None = None,
) -> str:
    """``/api/v1/models/<id>`` for one model, else the ``/api/v1/models`` listing.

    The models endpoint's ``nsfw`` is a boolean: the safe default ``"None"`` becomes ``nsfw=false``
    (image-level filtering is done again client-side by :func:`parse_models`)."""
    if model_id is not None and str(model_id):
        return f"{_base(api_url)}/api/v1/models/{model_id}"
    query: list[tuple[str, str]] = [("limit", str(min(limit, 100)))]
    if nsfw == "None":
        query.append(("nsfw", "false"))
    if sort:
        query.append(("sort", sort))
    if period:
        query.append(("period", period))
    if username:
        query.append(("username", username))
    if cursor:
        query.append(("cursor", cursor))
    return f"{_base(api_url)}/api/v1/models?{urlencode(query)}"


def source_id_from_url(url: str) -> str | None:
    """Civitai image URLs end in ``/<imageId>.<ext>`` (``.../width=512/9304.jpeg``): the id for images
    that lack an ``id`` key (2022-era model showcase images). None when the file name is not numeric."""
    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    match = _URL_ID.match(name)
    return match.group(1) if match else None


def _metadata(data: dict[str, Any], page: ParsedPage) -> None:
    metadata = data.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        page.errors.append("bad_metadata")
        return
    page.next_cursor = to_text(metadata.get("nextCursor"))
    next_page = metadata.get("nextPage")
    page.next_page = next_page.strip() if is_http_url(next_page) else None


def _nsfw_label(value: Any) -> str | None:
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def parse_image_item(item: Any, api_url: str) -> ImageEntry | str:
    """One ``/api/v1/images`` item as an :class:`ImageEntry`, or the kind of error that skips it."""
    if not isinstance(item, dict):
        return "bad_item"
    url = item.get("url")
    if not is_http_url(url):
        return "missing_url"
    url = url.strip()
    source_id = to_text(item.get("id")) or source_id_from_url(url)
    meta = item.get("meta")
    if meta is not None and not isinstance(meta, dict):
        meta = None
    meta = meta or {}
    params: dict[str, Any] = {k: v for k, v in meta.items() if k not in _META_FIELDS and v is not None}
    for key in _IMAGE_PARAMS:
        if item.get(key) is not None:
            params[key] = item[key]

    def number(key: str, convert: Any) -> Any:
        raw = meta.get(key)
        value = convert(raw)
        if value is None and raw not in (None, ""):
            params[key] = raw  # keep what we could not type, rather than lose it
        return value

    hints = SourceHints(
        source=SOURCE,
        source_id=source_id,
        page_url=image_page_url(api_url, source_id) if source_id else None,
        prompt=to_text(meta.get("prompt")),
        negative_prompt=to_text(meta.get("negativePrompt")),
        seed=number("seed", to_int),
        steps=number("steps", to_int),
        cfg_scale=number("cfgScale", to_float),
        sampler=to_text(meta.get("sampler")),
        model=to_text(meta.get("Model")),
        author=to_text(item.get("username")),
        nsfw=_nsfw_label(item.get("nsfwLevel")),
        created_at=to_text(item.get("createdAt")),
        origin="api",
        params=params,
    )
    return ImageEntry(url=url, hints=hints)


def parse_images(body: bytes | str | Any, api_url: str = DEFAULT_API_URL) -> ParsedPage:
    """Parse a ``GET /api/v1/images`` response. Raises :class:`PageError` for a body that is not JSON
    (``not_json``) or not ``{"items": [...]}`` (``bad_shape``); bad items are skipped into ``errors``."""
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise PageError("bad_shape", "expected an object with an 'items' list")
    page = ParsedPage()
    for item in data["items"]:
        entry = parse_image_item(item, api_url)
        if isinstance(entry, str):
            page.errors.append(entry)
        else:
            page.entries.append(entry)
    _metadata(data, page)
    return page


def _model_images(model: dict[str, Any], api_url: str, max_level: int | None, page: ParsedPage) -> None:
    versions = model.get("modelVersions")
    if not isinstance(versions, list):
        page.errors.append("missing_versions")
        return
    model_name = to_text(model.get("name"))
    model_id = to_text(model.get("id"))
    # Newest-first listings order models by their latest version: the newest publishedAt is the
    # model's position (Civitai writes one ISO format, "2024-01-08T04:48:43.529Z", which sorts as text)
    published = [to_text(v.get("publishedAt")) for v in versions if isinstance(v, dict)]
    position = max((p for p in published if p), default=None)
    for version in versions:
        if not isinstance(version, dict) or not isinstance(version.get("images"), list):
            page.errors.append("bad_version")
            continue
        version_id = to_text(version.get("id"))
        for image in version["images"]:
            if not isinstance(image, dict):
                page.errors.append("bad_item")
                continue
            url = image.get("url")
            if not is_http_url(url):
                page.errors.append("missing_url")
                continue
            url = url.strip()
            level = image.get("nsfwLevel")
            number = to_int(level)
            if max_level is not None and (number is None or number > max_level):
                page.errors.append("filtered_nsfw")
                continue
            source_id = to_text(image.get("id")) or source_id_from_url(url)
            params: dict[str, Any] = {k: image[k] for k in _MODEL_IMAGE_PARAMS if image.get(k) is not None}
            params.update(
                {
                    "modelId": model_id,
                    "modelName": model_name,
                    "modelType": to_text(model.get("type")),
                    "modelVersionId": version_id,
                    "modelVersionName": to_text(version.get("name")),
                    "baseModel": to_text(version.get("baseModel")),
                }
            )
            params = {k: v for k, v in params.items() if v is not None}
            if source_id:
                page_url: str | None = image_page_url(api_url, source_id)
            elif model_id:
                page_url = f"{_base(api_url)}/models/{model_id}" + (
                    f"?modelVersionId={version_id}" if version_id else ""
                )
            else:
                page_url = None
            page.entries.append(
                ImageEntry(
                    url=url,
                    hints=SourceHints(
                        source=SOURCE,
                        source_id=source_id,
                        page_url=page_url,
                        nsfw=_nsfw_label(level),
                        created_at=to_text(image.get("createdAt")),
                        origin="api",
                        params=params,
                    ),
                    position=position,
                )
            )


def parse_models(
    body: bytes | str | Any, api_url: str = DEFAULT_API_URL, *, max_nsfw_level: int | None = 1
) -> ParsedPage:
    """Parse ``GET /api/v1/models`` (``{"items": [model...], "metadata": ...}``) or ``GET
    /api/v1/models/<id>`` (one model object) into the models' showcase images.

    These images carry no prompt (the API omits ``meta``); hints hold the ids, model name/version and the
    ``nsfwLevel`` bitmask; no ``author`` (the image objects name no poster, and the model's creator is
    not necessarily it). Images whose ``nsfwLevel`` is missing or above ``max_nsfw_level`` (default 1 =
    PG; None = no limit) are skipped (``filtered_nsfw``). ``model`` is left unset: the checkpoint name
    comes from the file, if anywhere. Each entry's ``position`` is its model's newest version
    ``publishedAt`` (the order of ``sort=Newest``), also for versions whose images were all skipped."""
    data = load_json(body)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        models: list[Any] = data["items"]
    elif isinstance(data, dict) and "modelVersions" in data:
        models = [data]
    else:
        raise PageError("bad_shape", "expected a models listing ('items') or one model ('modelVersions')")
    page = ParsedPage()
    for model in models:
        if not isinstance(model, dict):
            page.errors.append("bad_item")
            continue
        _model_images(model, api_url, max_nsfw_level, page)
    _metadata(data, page)
    return page
