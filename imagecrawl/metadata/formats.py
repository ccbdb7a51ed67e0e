"""Parsers for the JSON / command-line payloads of the non-A1111 generators.

Every parser takes the decoded payload and returns an :class:`ImageMetadata` (without
``metadata_source``) or None when the payload is not of its kind.  :func:`parse_json_payload`
dispatches on the *content* of a JSON object (the same ``parameters`` key holds four schemas).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from typing import Any

from imagecrawl.metadata.comfyui import as_api_graph, parse_comfy, parse_comfy_graph
from imagecrawl.metadata.infotext import parse_size, to_float, to_int
from imagecrawl.metadata.types import ImageMetadata

logger = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 20_000


def load_json(text: str) -> Any:
    text = text.strip().strip("\x00").strip()
    if not text or text[0] not in "{[":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _s(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _jsonable(value: Any) -> Any:
    """Keep params JSON-serialisable and bounded."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(value)[:_MAX_PARAM_CHARS]
    if len(text) > _MAX_PARAM_CHARS:
        return text[:_MAX_PARAM_CHARS]
    return value


def _rest(d: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in d.items() if k not in used and v is not None}


def _build(
    d: dict[str, Any],
    generator: str,
    *,
    prompt: str,
    negative: str,
    seed: str,
    steps: str,
    sampler: str,
    cfg: str,
    model: str | None = None,
    width: str = "width",
    height: str = "height",
    size: str | None = None,
) -> ImageMetadata:
    meta = ImageMetadata(generator=generator)
    meta.prompt = _s(d.get(prompt))
    meta.negative_prompt = _s(d.get(negative))
    meta.seed = to_int(d.get(seed))
    meta.steps = to_int(d.get(steps))
    meta.sampler = _s(d.get(sampler))
    meta.cfg_scale = to_float(d.get(cfg))
    if model is not None:
        mv = d.get(model)
        meta.model = _s(mv)
    meta.width = to_int(d.get(width))
    meta.height = to_int(d.get(height))
    used = {prompt, negative, seed, steps, sampler, cfg, width, height}
    if model is not None and meta.model is not None:
        used.add(model)
    if size is not None and size in d:
        wh = parse_size(d.get(size))
        if wh:
            meta.width, meta.height = wh
            used.add(size)
    for key in (seed, steps, cfg):
        if key in d and getattr(meta, {seed: "seed", steps: "steps", cfg: "cfg_scale"}[key]) is None:
            used.discard(key)
    meta.params.update(_rest(d, used))
    return meta


# -------------------------------------------------------------------------------------- schemas
def parse_swarmui(d: dict[str, Any]) -> ImageMetadata | None:
    p = d.get("sui_image_params")
    if not isinstance(p, dict):
        return None
    meta = _build(
        p,
        "swarmui",
        prompt="prompt",
        negative="negativeprompt",
        seed="seed",
        steps="steps",
        sampler="sampler",
        cfg="cfgscale",
        model="model",
    )
    for key in ("sui_extra_data", "sui_models"):
        if key in d:
            meta.params[key] = _jsonable(d[key])
    return meta


def parse_fooocus(d: dict[str, Any]) -> ImageMetadata:
    meta = _build(
        d,
        "fooocus",
        prompt="prompt",
        negative="negative_prompt",
        seed="seed",
        steps="steps",
        sampler="sampler",
        cfg="guidance_scale",
        model="base_model",
        size="resolution",
    )
    return meta


def parse_ruined_fooocus(d: dict[str, Any]) -> ImageMetadata:
    return _build(
        d,
        "ruined-fooocus",
        prompt="Prompt",
        negative="Negative",
        seed="seed",
        steps="steps",
        sampler="sampler_name",
        cfg="cfg",
        model="base_model_name",
    )


def parse_hf_space(d: dict[str, Any]) -> ImageMetadata:
    model_key = next((k for k in ("Model", "model", "model_id", "base_model") if isinstance(d.get(k), str)), None)
    return _build(
        d,
        "hf-space",
        prompt="prompt",
        negative="negative_prompt",
        seed="seed",
        steps="num_inference_steps",
        sampler="sampler",
        cfg="guidance_scale",
        model=model_key,
        size="resolution",
    )


def parse_stability_matrix(d: dict[str, Any]) -> ImageMetadata:
    return _build(
        d,
        "stability-matrix",
        prompt="PositivePrompt",
        negative="NegativePrompt",
        seed="Seed",
        steps="Steps",
        sampler="Sampler",
        cfg="CfgScale",
        model="ModelName",
        width="Width",
        height="Height",
    )


def parse_tensorart(d: dict[str, Any], comfy_prompt: str | None = None) -> ImageMetadata:
    meta = _build(
        d,
        "tensorart",
        prompt="prompt",
        negative="negativePrompt",
        seed="seed",
        steps="steps",
        sampler="ksamplerName",
        cfg="cfgScale",
    )
    base = d.get("baseModel")
    if isinstance(base, dict):
        meta.model = _s(base.get("modelFileName")) or _s(base.get("label"))
    elif isinstance(base, str):
        meta.model = base
    if meta.sampler is None:
        meta.sampler = _s(d.get("samplerName") or d.get("sampler"))
    if meta.seed is not None and meta.seed < 0:
        meta.params["seed_placeholder"] = meta.seed
        meta.seed = None
    if comfy_prompt is not None:
        graph = as_api_graph(comfy_prompt)
        cm = parse_comfy_graph(graph) if graph else None
        if cm is not None:
            # precedence: the graph seed is the real one when generation_data says -1
            if meta.seed is None and cm.seed is not None and cm.seed >= 0:
                meta.seed = cm.seed
            for field in (
                "prompt",
                "negative_prompt",
                "steps",
                "sampler",
                "cfg_scale",
                "width",
                "height",
                "model",
            ):
                if getattr(meta, field) is None and getattr(cm, field) is not None:
                    setattr(meta, field, getattr(cm, field))
    return meta


def parse_easydiffusion(d: dict[str, Any]) -> ImageMetadata | None:
    lower = {str(k).lower().replace(" ", "_"): v for k, v in d.items()}
    if "use_stable_diffusion_model" not in lower and "stable_diffusion_model" not in lower:
        return None
    m = ImageMetadata(generator="easydiffusion")
    m.prompt = _s(lower.get("prompt"))
    m.negative_prompt = _s(lower.get("negative_prompt"))
    m.seed = to_int(lower.get("seed"))
    m.steps = to_int(lower.get("num_inference_steps", lower.get("steps")))
    m.sampler = _s(lower.get("sampler_name", lower.get("sampler")))
    m.cfg_scale = to_float(lower.get("guidance_scale"))
    m.model = _s(lower.get("use_stable_diffusion_model", lower.get("stable_diffusion_model")))
    m.width = to_int(lower.get("width"))
    m.height = to_int(lower.get("height"))
    used = {
        "prompt",
        "negative_prompt",
        "seed",
        "num_inference_steps",
        "steps",
        "sampler_name",
        "sampler",
        "guidance_scale",
        "use_stable_diffusion_model",
        "stable_diffusion_model",
        "width",
        "height",
    }
    m.params.update(_rest(lower, used))
    return m


def parse_drawthings(d: dict[str, Any]) -> ImageMetadata:
    meta = _build(
        d,
        "drawthings",
        prompt="c",
        negative="uc",
        seed="seed",
        steps="steps",
        sampler="sampler",
        cfg="scale",
        model="model",
    )
    wh = parse_size(d.get("size"))
    if wh:
        meta.width, meta.height = wh
        meta.params.pop("size", None)
    return meta


def novelai_comment(d: dict[str, Any]) -> bool:
    if "v4_prompt" in d or "uc" in d:
        return True
    return "sampler" in d and "scale" in d and "steps" in d


def parse_novelai(
    comment: dict[str, Any], *, description: str | None = None, source: str | None = None
) -> ImageMetadata:
    """NovelAI ``Comment`` JSON (+ ``Description`` = prompt in old files, ``Source`` = model)."""
    meta = ImageMetadata(generator="novelai")
    prompt = _s(comment.get("prompt"))
    v4 = comment.get("v4_prompt")
    if not prompt and isinstance(v4, dict):
        cap = v4.get("caption")
        if isinstance(cap, dict):
            prompt = _s(cap.get("base_caption"))
    meta.prompt = prompt if prompt else description
    neg = _s(comment.get("uc"))
    v4n = comment.get("v4_negative_prompt")
    if neg is None and isinstance(v4n, dict) and isinstance(v4n.get("caption"), dict):
        neg = _s(v4n["caption"].get("base_caption"))
    meta.negative_prompt = neg
    meta.seed = to_int(comment.get("seed"))
    meta.steps = to_int(comment.get("steps"))
    meta.sampler = _s(comment.get("sampler"))
    meta.cfg_scale = to_float(comment.get("scale"))
    meta.width = to_int(comment.get("width"))
    meta.height = to_int(comment.get("height"))
    meta.model = source
    for key, caps in (
        ("v4_prompt", "character_prompts"),
        ("v4_negative_prompt", "character_negative_prompts"),
    ):
        block = comment.get(key)
        if isinstance(block, dict) and isinstance(block.get("caption"), dict):
            chars = block["caption"].get("char_captions")
            if isinstance(chars, list) and chars:
                meta.params[caps] = [c.get("char_caption") for c in chars if isinstance(c, dict)]
    used = {"prompt", "uc", "seed", "steps", "sampler", "scale", "width", "height"}
    meta.params.update(_rest(comment, used))
    return meta


# ----------------------------------------------------------------------------------- InvokeAI
def parse_invokeai_metadata(d: dict[str, Any]) -> ImageMetadata | None:
    if not any(k in d for k in ("positive_prompt", "generation_mode", "positive_style_prompt")):
        return None
    meta = _build(
        d,
        "invokeai",
        prompt="positive_prompt",
        negative="negative_prompt",
        seed="seed",
        steps="steps",
        sampler="scheduler",
        cfg="cfg_scale",
    )
    model = d.get("model")
    if isinstance(model, dict):
        meta.model = _s(model.get("name")) or _s(model.get("model_name"))
        meta.params.pop("model", None)
        meta.params["model_info"] = _jsonable(model)
    elif isinstance(model, str):
        meta.model = model
        meta.params.pop("model", None)
    return meta


_INVOKE_NEG = re.compile(r"\[([^\[\]]*)\]")


def split_invoke_prompt(prompt: str) -> tuple[str, str | None]:
    """InvokeAI 1.x/2.x: every ``[bracketed]`` part of the prompt is negative."""
    groups = _INVOKE_NEG.findall(prompt)
    if not groups:
        return prompt, None
    positive = _INVOKE_NEG.sub("", prompt)
    positive = re.sub(r"[ \t]{2,}", " ", positive).strip()
    return positive, ", ".join(g.strip() for g in groups if g.strip())


def _weight(value: Any) -> str | None:
    number = to_float(value)
    if number is None:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def blended_prompt(pieces: list[Any]) -> str | None:
    """InvokeAI 2.x's weighted prompt pieces (``[{"prompt": "dog", "weight": 1}, {"prompt": "cat",
    "weight": 2}]``) as the blend it was written as: ``dog:1,cat:2``. One piece of weight 1 is just its
    text; every piece is kept."""
    parts: list[tuple[str, str | None]] = []
    for piece in pieces:
        if isinstance(piece, dict):
            text = piece.get("prompt")
            if isinstance(text, str):
                parts.append((text, _weight(piece.get("weight"))))
        elif isinstance(piece, str):
            parts.append((piece, None))
    if not parts:
        return None
    if len(parts) == 1 and parts[0][1] in (None, "1"):
        return parts[0][0]
    out = ""
    for index, (text, weight) in enumerate(parts):
        if index and not text[:1].isspace() and not text.startswith(","):
            out += ","
        out += text + (f":{weight}" if weight is not None else "")
    return out


def parse_invokeai_sdmetadata(d: dict[str, Any]) -> ImageMetadata | None:
    img = d.get("image")
    if not isinstance(img, dict):
        return None
    meta = ImageMetadata(generator="invokeai")
    raw = img.get("prompt")
    text: str | None = None
    negatives: list[str] = []
    if isinstance(raw, list) and raw:
        # the [negative] parts of each piece, then the pieces' positive parts as the blend
        pieces: list[Any] = []
        for piece in raw:
            if isinstance(piece, dict) and isinstance(piece.get("prompt"), str):
                positive, negative = split_invoke_prompt(piece["prompt"])
                pieces.append({**piece, "prompt": positive})
                if negative:
                    negatives.append(negative)
            else:
                pieces.append(piece)
        if len(raw) > 1:
            meta.params["prompt_pieces"] = _jsonable(raw)
        meta.prompt = blended_prompt(pieces)
        meta.negative_prompt = ", ".join(negatives) or None
    elif isinstance(raw, str):
        text = raw
    if text is not None:
        meta.prompt, meta.negative_prompt = split_invoke_prompt(text)
    meta.seed = to_int(img.get("seed"))
    meta.steps = to_int(img.get("steps"))
    meta.sampler = _s(img.get("sampler"))
    meta.cfg_scale = to_float(img.get("cfg_scale"))
    meta.width = to_int(img.get("width"))
    meta.height = to_int(img.get("height"))
    meta.model = _s(d.get("model_weights")) or _s(d.get("model"))
    meta.params.update(_rest(img, {"prompt", "seed", "steps", "sampler", "cfg_scale", "width", "height"}))
    meta.params.update(_rest(d, {"image", "model_weights"}))
    return meta


_DREAM = re.compile(r'^\s*"(.*)"\s*(.*)$', re.S)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.I)

#: the dream command line's options (InvokeAI 1.x/2.x ``Dream`` chunk and ``sd-metadata`` ``dream``):
#: short letter -> long name; a short option's value may be glued to it (``-s50``, ``-Ak_lms``)
DREAM_SHORT: dict[str, str] = {
    "s": "steps",
    "S": "seed",
    "n": "iterations",
    "W": "width",
    "H": "height",
    "C": "cfg_scale",
    "A": "sampler",
    "m": "model",
    "I": "init_img",
    "M": "init_mask",
    "f": "strength",
    "G": "gfpgan_strength",
    "U": "upscale",
    "v": "variation_amount",
    "V": "with_variations",
    "T": "fit",
    "x": "skip_normalize",
    "t": "log_tokenization",
    "g": "grid",
    "F": "fit",
    "b": "batch_size",
    "D": "out_direction",
    "c": "outcrop",
    "ft": "facetool",
}
#: long spellings of the same options
DREAM_ALIASES: dict[str, str] = {"sampler_name": "sampler", "cfg": "cfg_scale", "facetool_strength": "gfpgan_strength"}
#: options that take no value
DREAM_FLAGS = frozenset({"skip_normalize", "log_tokenization", "grid", "fit", "seamless", "hires_fix", "perlin_noise"})
#: options that take several values (``-U 2 0.75``)
DREAM_MULTI = frozenset({"upscale", "out_direction", "outcrop", "embiggen", "embiggen_tiles"})


def _dream_tokens(rest: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError:  # an unbalanced quote: plain whitespace
        return rest.split()


def dream_options(rest: str) -> dict[str, Any]:
    """The options of a dream command line after its quoted prompt, by long name, values as written.

    Every spelling InvokeAI took: ``-s50``, ``-s 50``, ``--steps 50``, ``--steps=50``, ``-Ak_lms``,
    ``--sampler=k_lms``; flags (``--seamless``) are True; ``-U 2 0.75`` gives a list."""
    tokens = _dream_tokens(rest)
    opts: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-") or _NUMBER.match(token):
            continue  # a stray word: not an option
        value: str | None = None
        if token.startswith("--"):
            name, eq, given = token[2:].partition("=")
            name = DREAM_ALIASES.get(name, name)
            value = given if eq else None
        else:
            body = token[1:]
            letter = "ft" if body == "ft" or body.startswith("ft=") else body[:1]
            name = DREAM_SHORT.get(letter, letter)
            glued = body[len(letter) :].lstrip("=")
            value = glued or None
        if not name:
            continue
        if name in DREAM_FLAGS and value is None:
            opts.setdefault(name, True)
            continue
        if name in DREAM_MULTI and value is None:
            values: list[str] = []
            while i < len(tokens) and (not tokens[i].startswith("-") or _NUMBER.match(tokens[i])):
                values.append(tokens[i])
                i += 1
            opts.setdefault(name, values if len(values) != 1 else values[0])
            continue
        if value is None and i < len(tokens) and (not tokens[i].startswith("-") or _NUMBER.match(tokens[i])):
            value = tokens[i]
            i += 1
        opts.setdefault(name, value if value is not None else True)
    return opts


def parse_invokeai_dream(text: str) -> ImageMetadata | None:
    m = _DREAM.match(text)
    if not m:
        return None
    meta = ImageMetadata(generator="invokeai")
    meta.prompt, meta.negative_prompt = split_invoke_prompt(m.group(1))
    for name, value in dream_options(m.group(2)).items():
        text_value = value if isinstance(value, str) else None
        if name == "steps":
            meta.steps = to_int(text_value)
        elif name == "seed":
            meta.seed = to_int(text_value)
        elif name == "cfg_scale":
            meta.cfg_scale = to_float(text_value)
        elif name == "sampler":
            meta.sampler = text_value
        elif name == "width":
            meta.width = to_int(text_value)
        elif name == "height":
            meta.height = to_int(text_value)
        elif name == "model":
            meta.model = text_value
        else:
            meta.params[name] = value
    if meta.steps is None and meta.seed is None and not meta.prompt:
        return None
    return meta


# ------------------------------------------------------------------------------ Civitai (comfy)
def parse_civitai_comfy(d: dict[str, Any]) -> ImageMetadata | None:
    graph = as_api_graph(d)
    meta = parse_comfy_graph(graph) if graph else None
    extra_raw = d.get("extraMetadata")
    extra = load_json(extra_raw) if isinstance(extra_raw, str) else extra_raw
    if not isinstance(extra, dict):
        extra = {}
    if meta is None:
        if not extra:
            return None
        meta = ImageMetadata()
    meta.generator = "civitai"
    # precedence: extraMetadata holds the user's prompt as typed; the graph fills the rest
    if _s(extra.get("prompt")) is not None:
        meta.prompt = extra["prompt"]
    if _s(extra.get("negativePrompt")) is not None:
        meta.negative_prompt = extra["negativePrompt"]
    for field, key, conv in (
        ("seed", "seed", to_int),
        ("steps", "steps", to_int),
        ("cfg_scale", "cfgScale", to_float),
    ):
        if getattr(meta, field) is None and key in extra:
            setattr(meta, field, conv(extra[key]))
    if meta.sampler is None and _s(extra.get("sampler")):
        meta.sampler = extra["sampler"]
    meta.params["civitai"] = _jsonable({k: v for k, v in extra.items() if k not in ("prompt", "negativePrompt")})
    if isinstance(d.get("extra"), dict):
        meta.params["civitai_extra"] = _jsonable(d["extra"])
    return meta


# ---------------------------------------------------------------------------------- dispatcher
def parse_json_payload(obj: Any) -> ImageMetadata | None:
    """Dispatch a decoded JSON object on its content; None if it is no known generation record."""
    if not isinstance(obj, dict):
        return None
    if "sui_image_params" in obj:
        return parse_swarmui(obj)
    if "Prompt" in obj and ("Negative" in obj or "RuinedFooocus" in str(obj.get("software", ""))):
        return parse_ruined_fooocus(obj)
    if "PositivePrompt" in obj:
        return parse_stability_matrix(obj)
    if (
        "prompt" in obj
        and "base_model" in obj
        and any(k in obj for k in ("full_prompt", "metadata_scheme", "performance", "guidance_scale", "sharpness"))
    ):
        return parse_fooocus(obj)
    ed = parse_easydiffusion(obj)
    if ed is not None:
        return ed
    if "num_inference_steps" in obj and "prompt" in obj:
        return parse_hf_space(obj)
    if "baseModel" in obj and ("cfgScale" in obj or "ksamplerName" in obj):
        return parse_tensorart(obj)
    inv = parse_invokeai_metadata(obj)
    if inv is not None:
        return inv
    if isinstance(obj.get("image"), dict) and "prompt" in obj["image"]:
        return parse_invokeai_sdmetadata(obj)
    if "c" in obj and any(k in obj for k in ("uc", "scale", "sampler", "seed")):
        return parse_drawthings(obj)
    if isinstance(obj.get("Comment"), str):
        inner = load_json(obj["Comment"])
        if isinstance(inner, dict) and novelai_comment(inner):
            return parse_novelai(inner, description=_s(obj.get("Description")), source=_s(obj.get("Source")))
    if novelai_comment(obj) and ("prompt" in obj or "v4_prompt" in obj):
        return parse_novelai(obj)
    if "extraMetadata" in obj:
        return parse_civitai_comfy(obj)
    if "prompt" in obj or "workflow" in obj:
        prompt, workflow = obj.get("prompt"), obj.get("workflow")
        if (isinstance(prompt, dict | str) and not isinstance(prompt, str)) or (
            isinstance(prompt, str) and prompt.strip().startswith("{")
        ):
            m = parse_comfy(prompt, workflow)
            if m is not None:
                return m
        if workflow is not None and prompt is None:
            return parse_comfy(None, workflow)
    graph = as_api_graph(obj)
    if graph:
        return parse_comfy_graph_with_generator(graph)
    if "nodes" in obj and "links" in obj:
        return parse_comfy(None, obj)
    return _parse_generic(obj)


def parse_comfy_graph_with_generator(graph: dict[str, Any]) -> ImageMetadata | None:
    meta = parse_comfy_graph(graph)
    if meta is not None:
        meta.generator = "comfyui"
    return meta


_GENERIC = {
    "prompt": ("prompt", "positive_prompt", "positivePrompt", "Prompt", "text"),
    "negative_prompt": ("negative_prompt", "negativePrompt", "negative", "Negative Prompt", "uc"),
    "seed": ("seed", "Seed"),
    "steps": ("steps", "num_inference_steps", "Steps", "sample_steps"),
    "sampler": ("sampler", "sampler_name", "Sampler", "scheduler"),
    "cfg_scale": (
        "cfg_scale",
        "cfg",
        "guidance_scale",
        "cfgScale",
        "scale",
        "CFG scale",
        "Guidance Scale",
        "guidance",
    ),
    "model": ("model", "Model", "model_name", "base_model", "Base Model", "checkpoint", "sd_model_name"),
}


def _parse_generic(obj: dict[str, Any]) -> ImageMetadata | None:
    """Unknown JSON schema: accept it only if it has a prompt string and at least one parameter."""
    meta = ImageMetadata()
    used: set[str] = set()
    for field, keys in _GENERIC.items():
        for key in keys:
            if key in obj:
                value = obj[key]
                if field in ("prompt", "negative_prompt", "sampler", "model"):
                    conv: Any = _s(value)
                elif field in ("seed", "steps"):
                    conv = to_int(value)
                else:
                    conv = to_float(value)
                if conv is not None:
                    setattr(meta, field, conv)
                    used.add(key)
                    break
    if not isinstance(meta.prompt, str) or not meta.prompt.strip():
        return None
    if meta.seed is None and meta.steps is None and meta.cfg_scale is None and meta.sampler is None:
        return None
    meta.width = to_int(obj.get("width", obj.get("Width")))
    meta.height = to_int(obj.get("height", obj.get("Height")))
    used |= {"width", "height", "Width", "Height"}
    if meta.width is None:
        for key in ("size", "Size", "resolution", "Resolution"):
            wh = parse_size(obj.get(key))
            if wh:
                meta.width, meta.height = wh
                used.add(key)
                break
    meta.params.update(_rest(obj, used))
    return meta
