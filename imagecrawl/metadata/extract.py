"""The orchestrator: sniff the container, collect the metadata carriers, apply the precedence rules.

Precedence (first hit wins, later copies are duplicates; see docs/metadata.md):

1. PNG text chunks (tEXt/zTXt/iTXt, before or after IDAT), by key:
   ``parameters-json`` (Stability Matrix) > ``generation_data`` (Tensor.Art, + graph seed) >
   ``invokeai_metadata`` > ``sd-metadata`` > ``invokeai_graph`` > ``parameters`` (A1111 infotext or
   JSON dispatched on content: SwarmUI, Fooocus, RuinedFooocus, HF Space, ...) > ``Dream`` >
   NovelAI ``Comment`` > ComfyUI ``prompt``/``workflow`` > Easy Diffusion per-field keys > XMP >
   other JSON/infotext keys.
2. EXIF (JPEG APP1, WebP ``EXIF``, PNG ``eXIf``, TIFF): UserComment (Exif IFD, then misplaced in
   IFD0) > ComfyUI ``prompt:``/``workflow:`` IFD0 tags > JSON/infotext in IFD0 text and XP tags >
   XMP tag > NovelAI ImageDescription.
3. XMP (``exif:UserComment`` JSON - Draw Things -, ``dc:description`` infotext).
4. JPEG COM segment (Fooocus JSON), only when it parses as a known record.
5. Stealth data in alpha/RGB LSBs (only when nothing else was found: it usually duplicates 1-2).

Other containers (AVIF, HEIF, JPEG XL, GIF, ...) are searched for an EXIF block and an XMP packet.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from imagecrawl.metadata import containers as c
from imagecrawl.metadata.comfyui import GRAPH_DEPTH, parse_comfy
from imagecrawl.metadata.formats import (
    load_json,
    novelai_comment,
    parse_easydiffusion,
    parse_invokeai_dream,
    parse_invokeai_metadata,
    parse_invokeai_sdmetadata,
    parse_json_payload,
    parse_novelai,
    parse_stability_matrix,
    parse_tensorart,
)
from imagecrawl.metadata.infotext import looks_like_infotext, parse_infotext
from imagecrawl.metadata.invokeai_graph import parse_invokeai_graph
from imagecrawl.metadata.stealth import stealth_from_image, stealth_from_png
from imagecrawl.metadata.types import ImageMetadata, Limits, MetadataError

logger = logging.getLogger(__name__)

XMP_PNG_KEY = "XML:com.adobe.xmp"
_COMFY_PREFIX = re.compile(r"^\s*(prompt|workflow)\s*:\s*", re.I)
_EASY_KEYS = (
    "use_stable_diffusion_model",
    "num_inference_steps",
    "Stable Diffusion model",
    "Negative Prompt",
)
# IFD0 text tags that tools abuse for metadata
_IFD0_TEXT_TAGS = (0x010F, 0x0110, 0x010E, 0x0131, 0x013B, 0x010D, 0x8298, 0x010B, 0x010C, 0x010A)
_XP_TAGS = (0x9C9C, 0x9C9F, 0x9C9B)  # XPComment, XPSubject, XPTitle


def extract_metadata(data: bytes, *, filename: str | None = None, limits: Limits | None = None) -> ImageMetadata:
    """Read the prompt and generation parameters from the bytes of an image file.

    Never raises: problems become ``error`` (see :data:`~imagecrawl.metadata.types.ERROR_KINDS`).
    ``filename`` is only used in log messages; the format is sniffed from the magic bytes.
    """
    lim = limits or Limits()
    fmt: str | None = None
    try:
        if not isinstance(data, bytes):
            data = bytes(data)
        if not data:
            return ImageMetadata(error="empty")
        fmt = c.sniff(data)
        if len(data) > lim.max_input_bytes:
            return ImageMetadata(image_format=fmt, error="too_large")
        if fmt is None:
            return ImageMetadata(error="unsupported_format")
        problems = c.Problems()
        token = GRAPH_DEPTH.set(lim.max_graph_depth)
        try:
            meta, source = _extract(data, fmt, lim, problems)
        finally:
            GRAPH_DEPTH.reset(token)
        if meta is None or source is None:
            result = ImageMetadata(image_format=fmt, error=problems.worst())
        else:
            result = _finish(meta, source, fmt)
        if problems.kinds:
            logger.debug("metadata of %s: problems %s", filename or "<bytes>", problems.kinds)
        return result
    except MetadataError as exc:
        logger.debug("metadata of %s failed: %s", filename or "<bytes>", exc)
        return ImageMetadata(image_format=fmt, error=exc.kind)
    except MemoryError:
        logger.debug("metadata of %s: out of memory", filename or "<bytes>")
        return ImageMetadata(image_format=fmt, error="too_large")
    except Exception:  # never let anything escape: the crawler calls this on every download
        logger.debug("metadata of %s: unexpected failure", filename or "<bytes>", exc_info=True)
        return ImageMetadata(image_format=fmt, error="corrupt")


def _finish(meta: ImageMetadata, source: str, fmt: str) -> ImageMetadata:
    meta.metadata_source = source
    meta.image_format = fmt
    meta.error = None
    if isinstance(meta.prompt, str):
        meta.prompt = meta.prompt.strip()
    if isinstance(meta.negative_prompt, str):
        meta.negative_prompt = meta.negative_prompt.strip()
    if isinstance(meta.sampler, str):
        meta.sampler = meta.sampler.strip()
    if isinstance(meta.model, str):
        meta.model = meta.model.strip()
    if meta.cfg_scale is not None:
        meta.cfg_scale = float(meta.cfg_scale)
    return meta


Found = tuple[ImageMetadata | None, str | None]


def _useful(meta: ImageMetadata | None) -> bool:
    if meta is None:
        return False
    return bool(
        meta.prompt
        or meta.negative_prompt
        or meta.seed is not None
        or meta.steps is not None
        or meta.model
        or meta.sampler
    )


def _extract(data: bytes, fmt: str, lim: Limits, problems: c.Problems) -> Found:
    if fmt == "PNG":
        return _extract_png(data, lim, problems)
    if fmt == "JPEG":
        return _extract_jpeg(data, lim, problems)
    if fmt == "WEBP":
        return _extract_webp(data, lim, problems)
    if fmt == "TIFF":
        exif = c.parse_tiff(data, lim, problems)
        meta, source = _from_exif(exif, problems) if exif else (None, None)
        if _useful(meta):
            return meta, source
    return _extract_scan(data, lim, problems)


_EXIF_MARKERS = (
    (b"Exif\x00\x00II*\x00", 6),  # HEIF/AVIF Exif item, GIF/other application blocks
    (b"Exif\x00\x00MM\x00*", 6),
    (b"Exif\x00\x00\x00\x00II*\x00", 8),  # JPEG XL "Exif" box: 4-byte TIFF offset, then TIFF
    (b"Exif\x00\x00\x00\x00MM\x00*", 8),
)


def _extract_scan(data: bytes, lim: Limits, problems: c.Problems) -> Found:
    """Other containers (AVIF, HEIF, JPEG XL, GIF, ...): look for an embedded EXIF block or XMP packet."""
    for marker, skip in _EXIF_MARKERS:
        pos = data.find(marker)
        if pos != -1:
            exif = c.parse_tiff(data[pos + skip : pos + skip + lim.max_text_bytes], lim, problems)
            if exif is not None:
                meta, source = _from_exif(exif, problems)
                if _useful(meta):
                    return meta, source
    start = data.find(b"<x:xmpmeta")
    if start != -1:
        end = data.find(b"</x:xmpmeta>", start, start + lim.max_text_bytes)
        if end != -1:
            meta = _from_xmp(data[start : end + 12])
            if _useful(meta):
                return meta, "xmp"
    return None, None


# -------------------------------------------------------------------------------------- per format
def _extract_png(data: bytes, lim: Limits, problems: c.Problems) -> Found:
    info = c.parse_png(data, lim, problems)
    texts: dict[str, str] = {}
    for _ctype, key, value in info.texts:
        texts.setdefault(key, value)
    if texts:
        meta, source = _from_texts(texts, problems)
        if _useful(meta):
            return meta, source
    if info.exif:
        exif = c.parse_tiff(info.exif, lim, problems)
        if exif is not None:
            meta, source = _from_exif(exif, problems)
            if _useful(meta):
                return meta, source
    if XMP_PNG_KEY in texts:
        meta = _from_xmp(texts[XMP_PNG_KEY])
        if _useful(meta):
            return meta, "xmp"
    found = stealth_from_png(data, info, lim, problems)
    if found:
        meta = _from_stealth(found[0])
        if _useful(meta):
            return meta, "stealth-" + found[1]
        problems.add("bad_text", "stealth payload not understood")
    return None, None


def _extract_jpeg(data: bytes, lim: Limits, problems: c.Problems) -> Found:
    info = c.parse_jpeg(data, lim, problems)
    for blob in info.exifs:
        exif = c.parse_tiff(blob, lim, problems)
        if exif is not None:
            meta, source = _from_exif(exif, problems)
            if _useful(meta):
                return meta, source
    if info.xmp:
        meta = _from_xmp(info.xmp)
        if _useful(meta):
            return meta, "xmp"
    for com in info.comments:
        text = c.decode_text(com)
        meta = _from_loose_text(text)
        if _useful(meta):
            return meta, "jpeg:com"
    return None, None


def _extract_webp(data: bytes, lim: Limits, problems: c.Problems) -> Found:
    info = c.parse_webp(data, lim, problems)
    if info.exif:
        exif = c.parse_tiff(info.exif, lim, problems)
        if exif is not None:
            meta, source = _from_exif(exif, problems)
            if _useful(meta):
                return meta, source
    if info.xmp:
        meta = _from_xmp(info.xmp)
        if _useful(meta):
            return meta, "xmp"
    # stealth data survives only in lossless WebP with alpha; a WebP must be decoded whole (libwebp has
    # no row-wise decoding here), so other WebPs are not decoded at all
    if info.has_alpha and info.lossless and not info.animated:
        found = stealth_from_image(data, info.width, info.height, lim, problems)
        if found:
            meta = _from_stealth(found[0])
            if _useful(meta):
                return meta, "stealth-" + found[1]
    return None, None


# --------------------------------------------------------------------------------------- carriers
def _from_texts(texts: dict[str, str], problems: c.Problems) -> Found:
    """PNG text chunks (or any key/value text map) -> metadata, by the precedence in the module doc."""
    if "parameters-json" in texts:
        obj = load_json(texts["parameters-json"])
        if isinstance(obj, dict) and "PositivePrompt" in obj:
            return parse_stability_matrix(obj), "png:parameters-json"
    if "generation_data" in texts:
        obj = load_json(texts["generation_data"])
        if isinstance(obj, dict):
            return parse_tensorart(obj, texts.get("prompt")), "png:generation_data"
        problems.add("bad_text", "generation_data is not JSON")
    if "invokeai_metadata" in texts:
        obj = load_json(texts["invokeai_metadata"])
        meta = parse_invokeai_metadata(obj) if isinstance(obj, dict) else None
        if meta is not None:
            return meta, "png:invokeai_metadata"
        problems.add("bad_text", "invokeai_metadata not understood")
    if "sd-metadata" in texts:
        obj = load_json(texts["sd-metadata"])
        meta = parse_invokeai_sdmetadata(obj) if isinstance(obj, dict) else None
        if meta is not None:
            return meta, "png:sd-metadata"
    if "invokeai_graph" in texts:
        meta = parse_invokeai_graph(load_json(texts["invokeai_graph"]))
        if _useful(meta):
            return meta, "png:invokeai_graph"
    if "parameters" in texts:
        meta = _from_parameters(texts["parameters"], texts)
        if _useful(meta):
            return meta, "png:parameters"
        problems.add("bad_text", "parameters not understood")
    if "Dream" in texts:
        meta = parse_invokeai_dream(texts["Dream"])
        if meta is not None:
            return meta, "png:Dream"
    if "Comment" in texts:
        obj = load_json(texts["Comment"])
        if isinstance(obj, dict):
            if novelai_comment(obj) or texts.get("Software", "").startswith("NovelAI"):
                return (
                    parse_novelai(obj, description=texts.get("Description"), source=texts.get("Source")),
                    "png:Comment",
                )
            meta = parse_json_payload(obj)
            if _useful(meta):
                return meta, "png:Comment"
    if "prompt" in texts or "workflow" in texts:
        prompt = texts.get("prompt")
        if prompt is not None and not prompt.lstrip().startswith("{"):
            prompt = None
        if prompt is not None or "workflow" in texts:
            meta = parse_comfy(prompt, texts.get("workflow"))
            if meta is not None:
                return meta, "png:comfyui"
    if ("prompt" in texts or "Prompt" in texts) and any(k in texts for k in _EASY_KEYS):
        ed = parse_easydiffusion(dict(texts))
        if ed is not None:
            return ed, "png:easydiffusion"
    if XMP_PNG_KEY in texts:
        meta = _from_xmp(texts[XMP_PNG_KEY])
        if _useful(meta):
            return meta, "xmp"
    if texts.get("Software", "").startswith("NovelAI") and texts.get("Description"):
        return ImageMetadata(prompt=texts["Description"], model=texts.get("Source"), generator="novelai"), (
            "png:Description"
        )
    for key in ("Description", "UserComment", "Parameters", "comment", "Comment"):
        if key in texts:
            meta = _from_loose_text(texts[key])
            if _useful(meta):
                return meta, "png:" + key
    return None, None


def _from_parameters(value: str, texts: dict[str, str]) -> ImageMetadata | None:
    stripped = value.strip().strip("\x00")
    if stripped.startswith("{"):
        obj = load_json(stripped)
        meta = parse_json_payload(obj) if obj is not None else None
        if _useful(meta):
            return meta
    meta = parse_infotext(value, require_params=False)
    if meta is not None:
        meta.generator = _infotext_generator(meta, texts)
    return meta


def _infotext_generator(meta: ImageMetadata, texts: dict[str, str] | None = None) -> str:
    texts = texts or {}
    if "Civitai resources" in meta.params or "Civitai metadata" in meta.params:
        if meta.model is None:  # Civitai's A1111 mode names the checkpoint only in its resources
            meta.model = _civitai_checkpoint(meta.params.get("Civitai resources"))
        return "civitai"
    if texts.get("fooocus_scheme") or str(meta.params.get("Version", "")).startswith("Fooocus"):
        return "fooocus"
    if "smproj" in texts or "parameters-json" in texts:
        return "stability-matrix"
    if "prompt" in texts and texts["prompt"].lstrip().startswith("{"):
        return "comfyui"  # a ComfyUI saver (SaveImageWithMetaData, comfy-image-saver) writing infotext
    return "a1111"


def _civitai_checkpoint(resources: Any) -> str | None:
    if isinstance(resources, list):
        for res in resources:
            if isinstance(res, dict) and res.get("type") == "checkpoint" and isinstance(res.get("modelName"), str):
                return res["modelName"]
    return None


def _from_loose_text(text: str) -> ImageMetadata | None:
    """A payload of unknown kind: JSON dispatched on content, else A1111 infotext with a params line."""
    stripped = text.strip().strip("\x00")
    if stripped.startswith("{"):
        obj = load_json(stripped)
        meta = parse_json_payload(obj) if obj is not None else None
        if _useful(meta):
            return meta
        # not JSON after all: an infotext whose prompt starts with "{" ({masterpiece}, a JSON-style prompt)
    if looks_like_infotext(stripped):
        meta = parse_infotext(stripped)
        if meta is not None:
            meta.generator = _infotext_generator(meta)
        return meta
    return None


def _from_exif(exif: c.Exif, problems: c.Problems) -> Found:
    ifd0_text: dict[int, str] = {}
    for tag in _IFD0_TEXT_TAGS:
        entry = exif.ifd0.get(tag)
        if entry is not None:
            ifd0_text[tag] = c.decode_exif_ascii(entry[1])
    software = ifd0_text.get(0x0131)
    description = ifd0_text.get(0x010E)

    # 1. UserComment (the Exif IFD, or misplaced in IFD0)
    for ifd, where in ((exif.exif, "exif:usercomment"), (exif.ifd0, "exif:ifd0")):
        entry = ifd.get(c.TAG_USER_COMMENT)
        if entry is None:
            continue
        text = c.decode_user_comment(entry[1], big_endian_tiff=exif.big_endian)
        meta = _from_user_comment(text, software=software, description=description)
        if _useful(meta):
            return meta, where
        if text.strip():
            problems.add("bad_text", "UserComment not understood")

    # 2. ComfyUI JSON with a key prefix in IFD0 tags (SaveAnimatedWEBP, Save Image Extended)
    comfy: dict[str, str] = {}
    for value in ifd0_text.values():
        m = _COMFY_PREFIX.match(value)
        if m and value[m.end() :].lstrip().startswith("{"):
            comfy.setdefault(m.group(1).lower(), value[m.end() :])
    if comfy:
        meta = parse_comfy(comfy.get("prompt"), comfy.get("workflow"))
        if _useful(meta):
            return meta, "exif:ifd0"

    # 3. JSON or infotext directly in an IFD0 text tag (legacy StableSwarmUI, some A1111 forks),
    #    or in the Windows XP tags (UTF-16LE)
    for tag in _XP_TAGS:
        entry = exif.ifd0.get(tag)
        if entry is not None:
            ifd0_text[tag] = entry[1].decode("utf-16-le", errors="replace").rstrip("\x00")
    for value in ifd0_text.values():
        meta = _from_loose_text(value)
        if _useful(meta):
            return meta, "exif:ifd0"

    # 4. an XMP packet in the TIFF XMP tag
    xmp = exif.ifd0.get(c.TAG_XMP)
    if xmp is not None:
        meta = _from_xmp(xmp[1])
        if _useful(meta):
            return meta, "xmp"

    # 5. NovelAI WebP without a usable Comment: prompt in ImageDescription
    if software and software.startswith("NovelAI") and description:
        return ImageMetadata(prompt=description, model=software, generator="novelai"), "exif:ifd0"
    return None, None


def _from_user_comment(text: str, *, software: str | None, description: str | None) -> ImageMetadata | None:
    stripped = text.strip().strip("\x00")
    if not stripped:
        return None
    if stripped.startswith("{"):
        obj = load_json(stripped)
        meta = parse_json_payload(obj) if obj is not None else None
        if meta is not None and meta.generator == "novelai":
            if meta.model is None and software:
                meta.model = software
            if not meta.prompt and description:
                meta.prompt = description
        if _useful(meta):
            return meta
        # only looks like JSON: an infotext whose prompt starts with "{" (JSON-style prompts, {masterpiece})
    meta = parse_infotext(stripped)
    if meta is not None:
        meta.generator = _infotext_generator(meta)
    return meta


def _from_xmp(raw: bytes | str) -> ImageMetadata | None:
    props = c.parse_xmp(raw)
    tool = props.get("xmp:CreatorTool", "")
    meta: ImageMetadata | None = None
    comment = props.get("exif:UserComment")
    if comment:
        meta = _from_loose_text(comment)
    if not _useful(meta):
        for key in ("dc:description", "tiff:ImageDescription", "photoshop:Instructions"):
            if props.get(key):
                meta = _from_loose_text(props[key])
                if _useful(meta):
                    break
    if meta is not None and "draw things" in tool.lower():
        meta.generator = "drawthings"
    if meta is not None and tool:
        meta.params.setdefault("creator_tool", tool)
    return meta


def _from_stealth(payload: str) -> ImageMetadata | None:
    stripped = payload.strip().strip("\x00")
    if stripped.startswith("{"):
        obj = load_json(stripped)
        if isinstance(obj, dict):
            meta = parse_json_payload(obj)
            if meta is None and isinstance(obj.get("Comment"), str):
                inner: Any = load_json(obj["Comment"])
                if isinstance(inner, dict):
                    meta = parse_novelai(inner, description=obj.get("Description"), source=obj.get("Source"))
            if _useful(meta) or not looks_like_infotext(stripped):
                return meta
    meta = parse_infotext(stripped, require_params=False)
    if meta is not None:
        meta.generator = _infotext_generator(meta)
    return meta
