"""Turn downloaded image bytes plus what the page/API said into a :class:`PromptImage`.

Pure: no Scrapy imports. The source's own values (API JSON, HTML) win where present; the image file's
embedded metadata fills the rest; pixel facts always come from the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pyarrow as pa

from imagecrawl.items import PromptImage
from imagecrawl.media import DEFAULT_MAX_PIXELS, probe_image
from imagecrawl.metadata import extract_metadata
from imagecrawl.metadata.provenance import read_provenance
from imagecrawl.normalise import created_at as parse_created_at
from imagecrawl.normalise import nsfw_level, shared_params
from imagecrawl.schema import SCHEMA
from imagecrawl.values import repair_text, to_float, to_int, to_text

logger = logging.getLogger(__name__)


def _finite(value: Any, depth: int = 0) -> Any:
    """``value`` with every NaN or infinite float replaced by None (not valid JSON); too deep = text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 64:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, depth + 1) for v in value]
    return value


def params_json(params: dict[str, Any]) -> str:
    """``params`` as strict JSON (RFC 8259: no NaN/Infinity), keys sorted."""
    try:
        return json.dumps(params, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except (ValueError, RecursionError):
        return json.dumps(_finite(params), ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)


INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: the largest finite float32 (``cfg_scale`` is float32: anything beyond would be stored as inf)
FLOAT32_MAX = 3.4028234663852886e38

#: what each typed column can hold: a value outside (or not a number) is stored as null, never wrapped,
#: rounded to infinity or refused by the Parquet writer; the value as given is kept in ``params``
COLUMN_RANGES: dict[str, tuple[int | float, int | float]] = {
    "seed": (INT64_MIN, INT64_MAX),
    "steps": (0, INT32_MAX),
    "cfg_scale": (-FLOAT32_MAX, FLOAT32_MAX),
    "clip_skip": (0, INT32_MAX),
    "denoising_strength": (-FLOAT32_MAX, FLOAT32_MAX),
    "width": (0, INT32_MAX),
    "height": (0, INT32_MAX),
    "image_phash": (INT64_MIN, INT64_MAX),
    "image_size_bytes": (0, INT64_MAX),
}
_FLOAT_COLUMNS = frozenset({"cfg_scale", "denoising_strength"})
#: the string columns of the record (every one is made valid UTF-8 before it is stored)
TEXT_COLUMNS: tuple[str, ...] = tuple(f.name for f in SCHEMA if f.type == pa.string())


def _fits(name: str, value: Any) -> Any:
    """``value`` as column ``name`` stores it, or raises ValueError when it cannot hold it."""
    if isinstance(value, bool):
        raise ValueError(name)
    lo, hi = COLUMN_RANGES[name]
    if name in _FLOAT_COLUMNS:
        number: int | float = float(value) if isinstance(value, (int, float)) else math.nan
        if not math.isfinite(number):
            raise ValueError(name)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    else:
        raise ValueError(name)
    if not lo <= number <= hi:
        raise ValueError(name)
    return number


def conform(record: PromptImage, raw: dict[str, Any] | None = None) -> list[str]:
    """Make ``record`` storable, in place, and say what was changed (``<kind>/<column>`` each):

    * ``out_of_range/<column>``: a typed column's value it cannot hold (``cfg_scale`` 1e308, a seed
      past int64, negative steps, NaN) is set to null; the value as given goes to ``raw[column]``
      (the caller's params) when ``raw`` is given;
    * ``text_replaced/<column>``: unencodable characters (lone surrogates) were replaced by U+FFFD,
      surrogate pairs joined (:func:`imagecrawl.values.repair_text`).

    Pure and cheap for a record that needs nothing (one encode per string)."""
    fixes: list[str] = []
    for name in COLUMN_RANGES:
        value = getattr(record, name)
        if value is None:
            continue
        try:
            fitted = _fits(name, value)
        except (ValueError, TypeError, OverflowError):
            setattr(record, name, None)
            fixes.append(f"out_of_range/{name}")
            if raw is not None:
                raw.setdefault(name, repair_text(str(value))[0])
            continue
        if fitted is not value:
            setattr(record, name, fitted)
    for name in TEXT_COLUMNS:
        value = getattr(record, name)
        if isinstance(value, str):
            fixed, replaced = repair_text(value)
            if replaced:
                setattr(record, name, fixed)
                fixes.append(f"text_replaced/{name}")
    image = record.image
    if isinstance(image, dict) and isinstance(image.get("path"), str):
        fixed, replaced = repair_text(image["path"])
        if replaced:
            record.image = {**image, "path": fixed}
            fixes.append("text_replaced/image_path")
    return fixes


@dataclass(slots=True)
class SourceHints:
    """What the source itself says about an image (all optional)."""

    source: str
    source_id: str | None = None
    page_url: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    model: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    author: str | None = None
    nsfw: str | None = None
    license: str | None = None
    #: when the source says the image was made or posted (ISO 8601 text)
    created_at: str | None = None
    #: where the prompt came from when the source gives it: "api" or "html"
    origin: str = "api"
    params: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        """A plain dict, for Request.cb_kwargs / meta (survives disk queues)."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> SourceHints:
        return cls(**{k: v for k, v in data.items() if k in cls.__slots__})


class EmbeddedOptOut(Exception):
    """The image file itself forbids training (XMP ``plus:DataMining``, C2PA training-mining)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _text(value: Any) -> str | None:
    """Record text: every value but None is taken as its ``str`` (``refuse=()``), then cleaned."""
    return to_text(value, refuse=())


def author_hash(author: str | None, salt: bytes) -> str | None:
    """A salted HMAC of the author's name: stable within one store, not reversible by a dictionary."""
    if not author:
        return None
    return hmac.new(salt, author.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def build_record(
    *,
    hints: SourceHints,
    image_url: str,
    body: bytes,
    salt: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    now: datetime | None = None,
    embedded_optout: bool = True,
    on_fix: Callable[[str], None] | None = None,
) -> PromptImage:
    """Build the record; raises :class:`imagecrawl.media.MediaError` for a body that is not an image
    and, when ``embedded_optout``, :class:`EmbeddedOptOut` for a file that forbids training.

    Every value passes :func:`conform` here, whatever its source (API JSON, HTML, any metadata chunk of
    the file): ``on_fix`` is called with each change it made (``text_replaced/prompt``, ...)."""
    # The file's own refusal first: an image the decoder refuses (a text chunk past Pillow's limits)
    # that states a refusal is counted as the refusal it is.
    provenance = read_provenance(body)
    refusal = provenance.refusal() if embedded_optout else None
    if refusal is not None:
        raise EmbeddedOptOut(*refusal)
    facts = probe_image(body, max_pixels=max_pixels)
    meta = extract_metadata(body)
    params: dict[str, Any] = {}
    if meta.params:
        params.update(meta.params)
    if meta.width and meta.height and (meta.width, meta.height) != (facts.width, facts.height):
        params["generation_size"] = f"{meta.width}x{meta.height}"
    if meta.generator:
        params.setdefault("generator", meta.generator)
    params.update(hints.params)

    prompt = _text(hints.prompt)
    if prompt is not None:
        metadata_source: str | None = hints.origin
        # A source that shows the prompt but not the negative one (Lexica): the file may still have it.
        negative = _text(hints.negative_prompt) or _text(meta.negative_prompt)
    else:
        prompt = _text(meta.prompt)
        negative = _text(meta.negative_prompt)
        metadata_source = meta.metadata_source if (prompt or meta.found()) else None

    def pick(own: Any, embedded: Any) -> Any:
        return own if own is not None else embedded

    source_id = _text(hints.source_id)
    record_id = f"{hints.source}:{source_id}" if source_id else f"sha256:{facts.sha256}"
    record = PromptImage(
        id=record_id,
        source=hints.source,
        source_id=source_id,
        page_url=hints.page_url,
        image_url=image_url,
        prompt=prompt,
        negative_prompt=negative,
        model=_text(pick(hints.model, meta.model)),
        seed=to_int(pick(hints.seed, meta.seed), truncate=True),
        steps=to_int(pick(hints.steps, meta.steps), truncate=True),
        cfg_scale=_float(pick(hints.cfg_scale, meta.cfg_scale)),
        sampler=_text(pick(hints.sampler, meta.sampler)),
        width=facts.width,
        height=facts.height,
        metadata_source=metadata_source,
        image_sha256=facts.sha256,
        image_phash=facts.phash,
        image_format=facts.format,
        image_size_bytes=facts.size_bytes,
        author_hash=author_hash(hints.author, salt),
        nsfw=_text(hints.nsfw),
        license=_text(hints.license),
        crawled_at=now or datetime.now(UTC),
        **cast("dict[str, Any]", provenance.columns()),
        nsfw_level=nsfw_level(hints.nsfw),
        created_at=parse_created_at(hints.created_at),
        **shared_params(params),
        image={"bytes": body, "path": _image_name(image_url, facts.sha256, facts.format)},
    )
    fixes = conform(record, raw=params)
    if params:
        record.params, replaced = repair_text(params_json(params))
        if replaced:
            fixes.append("text_replaced/params")
    if on_fix is not None:
        for fix in fixes:
            on_fix(fix)
    return record


def _float(value: Any) -> float | None:
    """A number as a float, kept even when float32 cannot hold it (:func:`conform` decides and counts);
    a huge integer string or an int past float's range is infinite here."""
    number = to_float(value, strip=False)
    if number is None and value is not None and not isinstance(value, bool):
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            return None
        except OverflowError:
            return math.inf
    return number


_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "AVIF": "avif"}


def _image_name(url: str, sha256: str, fmt: str) -> str:
    """The ``image.path`` value: a stable file name (datasets uses it as the file name on export)."""
    return f"{sha256}.{_EXT.get(fmt, 'bin')}"
