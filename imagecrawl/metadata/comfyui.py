"""ComfyUI graphs: find prompt, negative prompt and sampler settings by walking the node links.

The API graph (``prompt``) is ``{node_id: {"class_type": ..., "inputs": {...}}}`` where a link is
``[source_node_id, output_slot]``.  The UI graph (``workflow``) is converted to the same shape
(best effort) when no API graph is present.

Which sampler: the *root* samplers are those with no other sampler upstream (a hires-fix / refiner
/ detailer pass is downstream of the base pass); the first root in graph order is reported, the
number of samplers goes to ``params["comfyui_samplers"]``.
"""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any

from imagecrawl.metadata.infotext import parse_size, to_float, to_int
from imagecrawl.metadata.types import ImageMetadata

logger = logging.getLogger(__name__)

Graph = dict[str, dict[str, Any]]

MAX_DEPTH = 64
HARD_MAX_DEPTH = 250
MAX_VISITS = 5_000
MAX_TEXT_CHARS = 100_000
#: link depth for the current extraction (set from ``Limits.max_graph_depth`` by extract_metadata)
GRAPH_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("comfy_graph_depth", default=MAX_DEPTH)
MAX_NODES = 5000

SAMPLER_CLASSES = frozenset(
    {
        "KSampler",
        "KSamplerAdvanced",
        "SamplerCustom",
        "SamplerCustomAdvanced",
        "KSampler (Efficient)",
        "KSampler Adv. (Efficient)",
        "KSamplerAdvanced (Efficient)",
        "KSampler SDXL (Eff.)",
        "KSampler //Inspire",
        "KSamplerAdvanced //Inspire",
        "KSampler_A1111",
        "Sampler",
    }
)
# inputs that hold prompt text on text-encode / prompt nodes, in priority order
TEXT_KEYS = (
    "text",
    "text_g",
    "text_l",
    "t5xxl",
    "clip_l",
    "prompt",
    "populated_text",
    "wildcard_text",
    "string",
    "value",
    "Text",
    "String",
)
STRING_KEYS = (
    "text",
    "string",
    "value",
    "Text",
    "String",
    "prompt",
    "populated_text",
    "wildcard_text",
    "STRING",
)
MODEL_NAME_KEYS = (
    "ckpt_name",
    "unet_name",
    "base_ckpt_name",
    "model_name",
    "checkpoint",
    "model_path",
    "gguf_name",
)
INT_VALUE_KEYS = ("value", "int", "number", "Number", "Value", "INT", "seed", "noise_seed")
_CONTROL_WORDS = ("fixed", "increment", "decrement", "randomize")


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def as_api_graph(obj: Any) -> Graph | None:
    """Accept an API graph, ``{"prompt": graph, ...}`` or a JSON string of either; None otherwise."""
    if isinstance(obj, str):
        obj = load_json(obj.strip().rstrip("\x00"))
    if not isinstance(obj, dict):
        return None
    inner = obj.get("prompt")
    if isinstance(inner, str):
        inner = load_json(inner)
    if isinstance(inner, dict) and "class_type" not in obj:
        g = _nodes_of(inner)
        if g:
            return g
    return _nodes_of(obj)


def _nodes_of(obj: dict[str, Any]) -> Graph | None:
    nodes = {
        str(k): v
        for k, v in obj.items()
        if isinstance(v, dict) and isinstance(v.get("class_type"), str) and isinstance(v.get("inputs", {}), dict)
    }
    if not nodes or len(nodes) > MAX_NODES:
        return None
    return nodes


# ------------------------------------------------------------------------------------- UI workflow
WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "SamplerCustom": ("add_noise", "noise_seed", "control_after_generate", "cfg"),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": (
        "width",
        "height",
        "crop_w",
        "crop_h",
        "target_width",
        "target_height",
        "text_g",
        "text_l",
    ),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl", "guidance"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CheckpointLoader": ("config_name", "ckpt_name"),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "RandomNoise": ("noise_seed", "control_after_generate"),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "CFGGuider": ("cfg",),
    "FluxGuidance": ("guidance",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "PrimitiveNode": ("value", "control_after_generate"),
    "PrimitiveString": ("value",),
    "PrimitiveStringMultiline": ("value",),
    "PrimitiveInt": ("value",),
    "PrimitiveFloat": ("value",),
}


def workflow_to_api(obj: Any) -> Graph | None:
    """Best-effort conversion of a UI ``workflow`` (nodes + links + widgets_values) to an API graph."""
    if isinstance(obj, str):
        obj = load_json(obj.strip().rstrip("\x00"))
    if not isinstance(obj, dict):
        return None
    nodes = obj.get("nodes")
    if not isinstance(nodes, list) or not nodes or len(nodes) > MAX_NODES:
        return None
    links: dict[int | str, tuple[str, int]] = {}
    raw_links = obj.get("links")
    for link in raw_links if isinstance(raw_links, list) else []:
        if isinstance(link, list) and len(link) >= 3 and isinstance(link[0], int | str):
            slot = link[2] if isinstance(link[2], int) and not isinstance(link[2], bool) else 0
            links[link[0]] = (str(link[1]), slot)
        elif isinstance(link, dict) and isinstance(link.get("id"), int | str):
            oslot = link.get("origin_slot")
            links[link["id"]] = (str(link.get("origin_id")), oslot if isinstance(oslot, int) else 0)
    graph: Graph = {}
    reroutes: dict[str, Any] = {}
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            continue
        nid = str(node.get("id"))
        ctype = node["type"]
        if node.get("mode") in (2, 4):  # muted / bypassed
            continue
        inputs: dict[str, Any] = {}
        node_inputs = node.get("inputs")
        for inp in node_inputs if isinstance(node_inputs, list) else []:
            link_id = inp.get("link") if isinstance(inp, dict) else None
            if isinstance(link_id, int | str) and link_id in links:
                inputs[str(inp.get("name"))] = list(links[link_id])
        if ctype == "Reroute":
            reroutes[nid] = next(iter(inputs.values()), None)
            continue
        widgets = node.get("widgets_values")
        if isinstance(widgets, dict):
            for k, v in widgets.items():
                inputs.setdefault(str(k), v)
        elif isinstance(widgets, list):
            names = list(WIDGETS.get(ctype, ()))
            if not names and widgets and isinstance(widgets[0], str) and "Text" in ctype:
                names = ["text"]
            if "control_after_generate" in names:
                i = names.index("control_after_generate")
                if not (i < len(widgets) and widgets[i] in _CONTROL_WORDS):
                    names.pop(i)
            for name, value in zip(names, widgets, strict=False):
                if name != "control_after_generate":
                    inputs.setdefault(name, value)
        title = node.get("title")
        graph[nid] = {"class_type": ctype, "inputs": inputs, "_meta": {"title": title} if title else {}}
    # resolve links through reroutes
    for n in graph.values():
        for k, v in list(n["inputs"].items()):
            hops = 0
            while is_link(v) and str(v[0]) in reroutes and hops < 50:
                v = reroutes[str(v[0])]
                hops += 1
            if v is None:
                del n["inputs"][k]
            else:
                n["inputs"][k] = v
    return graph or None


# ---------------------------------------------------------------------------------------- walking
class _Walker:
    def __init__(self, graph: Graph, max_depth: int = MAX_DEPTH) -> None:
        self.g = graph
        self.max_depth = min(max_depth, HARD_MAX_DEPTH)  # recursion stays far below Python's limit
        # total node visits of one walk: a DAG of concatenation nodes sharing children would otherwise
        # cost 2**depth visits (and build a 2**depth-long string)
        self.budget = MAX_VISITS

    def _spend(self) -> bool:
        self.budget -= 1
        return self.budget >= 0

    def node(self, ref: Any) -> dict[str, Any] | None:
        if not is_link(ref):
            return None
        return self.g.get(str(ref[0]))

    def inputs(self, node: dict[str, Any] | None) -> dict[str, Any]:
        if node is None:
            return {}
        ins = node.get("inputs")
        return ins if isinstance(ins, dict) else {}

    # ---- scalar values (possibly behind primitive nodes)
    def value(self, v: Any, keys: tuple[str, ...], depth: int = 0) -> Any:
        if not is_link(v):
            return v
        if depth > self.max_depth or not self._spend():
            return None
        ins = self.inputs(self.node(v))
        for key in keys:
            if key in ins:
                return self.value(ins[key], keys, depth + 1)
        links = [x for x in ins.values() if is_link(x)]
        if len(links) == 1:  # single pass-through input (reroute-like)
            return self.value(links[0], keys, depth + 1)
        return None

    def string(self, v: Any, role: str, depth: int = 0) -> str | None:
        if isinstance(v, str):
            return v
        if not is_link(v) or depth > self.max_depth or not self._spend():
            return None
        node = self.node(v)
        ins = self.inputs(node)
        ctype = str(node.get("class_type", "")) if node else ""
        for key in _role_keys(role):
            if key in ins and (not is_link(ins[key]) or self._is_string_source(ins[key])):
                s = self.string(ins[key], role, depth + 1)
                if s is not None:
                    return s
        low = ctype.lower()
        if any(w in low for w in ("concat", "join", "combine", "append")):
            delim = ins.get("delimiter", ins.get("separator", ins.get("Delimiter", " ")))
            parts = []
            for key, val in ins.items():
                if key.lower().startswith(("text", "string")) and key not in ("delimiter", "separator"):
                    s = self.string(val, role, depth + 1)
                    if s:
                        parts.append(s)
            if parts:
                return (delim if isinstance(delim, str) else " ").join(parts)[:MAX_TEXT_CHARS]
        for key in STRING_KEYS:
            if key in ins:
                s = self.string(ins[key], role, depth + 1)
                if s is not None:
                    return s
        links = [x for x in ins.values() if is_link(x)]
        if len(links) == 1:
            return self.string(links[0], role, depth + 1)
        return None

    def _is_string_source(self, v: Any) -> bool:
        """True when the linked node produces a string (not CONDITIONING)."""
        node = self.node(v)
        if node is None:
            return False
        low = str(node.get("class_type", "")).lower()
        ins = self.inputs(node)
        return not (
            "encode" in low
            or "conditioning" in low
            or "clip" in ins
            or any(k.startswith("conditioning") for k in ins)
            or is_sampler(node)
        )

    # ---- conditioning -> prompt texts
    def texts(self, ref: Any, role: str, depth: int = 0, seen: set[str] | None = None) -> list[str]:
        if seen is None:
            seen = set()
        node = self.node(ref)
        if node is None or depth > self.max_depth or not self._spend():
            return []
        key_id = str(ref[0])
        if key_id in seen:
            return []
        seen.add(key_id)
        ctype = str(node.get("class_type", ""))
        ins = self.inputs(node)
        if "ZeroOut" in ctype:
            return []
        found: list[str] = []
        has_text_input = False
        for key in _role_keys(role):
            if key in ins and (isinstance(ins[key], str) or self._is_string_source(ins[key])):
                s = self.string(ins[key], role, depth + 1)
                if s is not None:
                    return [s]
        for key in TEXT_KEYS:
            if key in ins:
                v = ins[key]
                if isinstance(v, str) or (is_link(v) and self._is_string_source(v)):
                    has_text_input = True
                    s = self.string(v, role, depth + 1)
                    if s and s not in found:
                        found.append(s)
        if has_text_input:
            for key in ("text", "populated_text"):  # the text actually encoded wins over templates
                if isinstance(ins.get(key), str) and ins[key]:
                    return [ins[key]]
            return found
        # pass-through nodes and combiners
        for key, v in ins.items():
            if not is_link(v):
                continue
            if key == role or key.startswith(("conditioning", "cond")) or key in ("positive_cond", "base_" + role):
                for s in self.texts(v, role, depth + 1, seen):
                    if s not in found:
                        found.append(s)
        return found

    # ---- model / size / ancestors
    def model(self, ref: Any, depth: int = 0) -> str | None:
        node = self.node(ref)
        if node is None or depth > self.max_depth:
            return None
        ins = self.inputs(node)
        for key in MODEL_NAME_KEYS:
            v = ins.get(key)
            if isinstance(v, dict):  # pysssss loaders: {"content": "name.safetensors", "image": ...}
                v = v.get("content")
            if isinstance(v, str) and v:
                return v
            if is_link(v):
                s = self.string(v, "positive", depth + 1)
                if s:
                    return s
        for key in ("model", "MODEL", "base_model", "unet"):
            if is_link(ins.get(key)):
                return self.model(ins[key], depth + 1)
        return None

    def size(self, ref: Any, depth: int = 0) -> tuple[int, int] | bool | None:
        """(w, h) from an empty-latent node upstream; False when the latent comes from an image."""
        node = self.node(ref)
        if node is None or depth > self.max_depth:
            return None
        ins = self.inputs(node)
        ctype = str(node.get("class_type", ""))
        if "VAEEncode" in ctype or any(k in ins for k in ("pixels", "image")):
            return False
        w = self.value(ins.get("width", ins.get("empty_latent_width")), INT_VALUE_KEYS)
        h = self.value(ins.get("height", ins.get("empty_latent_height")), INT_VALUE_KEYS)
        wi, hi = to_int(w), to_int(h)
        if wi and hi and not is_link(ins.get("samples")):
            return wi, hi
        if isinstance(ins.get("resolution"), str):
            size = parse_size(ins["resolution"].split("(")[0])
            if size:
                return size
        for key in ("latent_image", "latent", "samples", "LATENT"):
            if is_link(ins.get(key)):
                return self.size(ins[key], depth + 1)
        return None


def _downstream_of(graph: Graph, sources: list[str]) -> set[str]:
    """Every node reachable from ``sources`` along links (source -> consumer), in O(nodes + links)."""
    consumers: dict[str, list[str]] = {}
    for nid, node in graph.items():
        ins = node.get("inputs")
        if not isinstance(ins, dict):
            continue
        for v in ins.values():
            if is_link(v):
                consumers.setdefault(str(v[0]), []).append(nid)
    seen: set[str] = set()
    stack = [c for s in sources for c in consumers.get(s, ())]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        stack.extend(consumers.get(cur, ()))
    return seen


def _role_keys(role: str) -> tuple[str, ...]:
    return ("text_" + role, role + "_prompt", role, role.capitalize(), "text_" + role[:3])


def is_sampler(node: dict[str, Any]) -> bool:
    ctype = node.get("class_type")
    ins = node.get("inputs")
    if not isinstance(ins, dict):
        return False
    if ctype in SAMPLER_CLASSES:
        return True
    if "positive" in ins and "negative" in ins and any(k in ins for k in ("seed", "noise_seed", "steps")):
        return True
    return "guider" in ins and "sigmas" in ins


def parse_comfy_graph(graph: Graph, *, max_depth: int | None = None) -> ImageMetadata | None:
    """Prompt + parameters of an API graph; None if the graph yields nothing useful."""
    w = _Walker(graph, GRAPH_DEPTH.get() if max_depth is None else max_depth)
    samplers = [nid for nid, n in graph.items() if is_sampler(n)]
    meta = ImageMetadata()
    params: dict[str, Any] = {}
    if samplers:
        downstream = _downstream_of(graph, samplers)
        roots = [s for s in samplers if s not in downstream]
        sid = (roots or samplers)[0]
        _fill_from_sampler(w, graph[sid], meta, params)
        params["comfyui_sampler_node"] = sid
        params["comfyui_samplers"] = len(samplers)
    else:
        _fill_without_sampler(w, graph, meta)
    if meta.model is None:
        for n in graph.values():
            ins = w.inputs(n)
            for key in ("ckpt_name", "unet_name", "gguf_name"):
                v = ins.get(key)
                v = v.get("content") if isinstance(v, dict) else v
                if isinstance(v, str) and v:
                    meta.model = v
                    break
            if meta.model:
                break
    loras = []
    for n in graph.values():
        ins = w.inputs(n)
        if isinstance(ins.get("lora_name"), str) and ins["lora_name"] not in ("None", ""):
            lora: dict[str, Any] = {"name": ins["lora_name"]}
            for k in ("strength_model", "strength_clip"):
                if isinstance(ins.get(k), int | float) and not isinstance(ins.get(k), bool):
                    lora[k] = ins[k]
            loras.append(lora)
        if n.get("class_type") == "FluxGuidance" and "guidance" not in params:
            g = to_float(w.value(ins.get("guidance"), INT_VALUE_KEYS))
            if g is not None:
                params["guidance"] = g
    if loras:
        params["loras"] = loras
    meta.params.update({k: v for k, v in params.items() if v is not None})
    if not (meta.prompt or meta.negative_prompt or meta.seed is not None or meta.steps is not None or meta.model):
        return None
    return meta


def _fill_from_sampler(w: _Walker, node: dict[str, Any], meta: ImageMetadata, params: dict[str, Any]) -> None:
    ins = w.inputs(node)
    noise = w.inputs(w.node(ins.get("noise")))
    guider = w.inputs(w.node(ins.get("guider")))
    sampler = w.node(ins.get("sampler"))
    sampler_ins = w.inputs(sampler)
    sigmas = w.node(ins.get("sigmas"))
    sigmas_ins = w.inputs(sigmas)

    def pick(keys: tuple[str, ...], *sources: dict[str, Any]) -> Any:
        for src in sources:
            for key in keys:
                if key in src:
                    v = w.value(src[key], (*keys, *INT_VALUE_KEYS))
                    if v is not None:
                        return v
        return None

    meta.seed = to_int(pick(("seed", "noise_seed"), ins, noise))
    meta.steps = to_int(pick(("steps",), ins, sigmas_ins))
    meta.cfg_scale = to_float(pick(("cfg", "cfg_scale"), ins, guider))
    sname = pick(("sampler_name",), ins, sampler_ins)
    if sname is None and sampler is not None:
        sname = sampler.get("class_type")
    meta.sampler = sname if isinstance(sname, str) else None
    sched = pick(("scheduler",), ins, sigmas_ins)
    if sched is None and sigmas is not None and "steps" not in sigmas_ins:
        sched = sigmas.get("class_type")
    if isinstance(sched, str):
        params["scheduler"] = sched
    denoise = to_float(pick(("denoise",), ins, sigmas_ins))
    if denoise is not None:
        params["denoise"] = denoise

    pos_ref = next(
        (s[k] for s in (ins, guider) for k in ("positive", "conditioning", "cond1") if is_link(s.get(k))),
        None,
    )
    neg_ref = next((s[k] for s in (ins, guider) for k in ("negative",) if is_link(s.get(k))), None)
    if pos_ref is not None:
        texts = w.texts(pos_ref, "positive")
        meta.prompt = _join(texts) if texts else None
    if neg_ref is not None:
        texts = w.texts(neg_ref, "negative")
        meta.negative_prompt = _join(texts) if texts else ""
    model_ref = next((s["model"] for s in (ins, guider, sigmas_ins) if is_link(s.get("model"))), None)
    if model_ref is not None:
        meta.model = w.model(model_ref)
    size: tuple[int, int] | bool | None = None
    for key in ("latent_image", "latent", "samples"):
        if is_link(ins.get(key)):
            size = w.size(ins[key])
            break
    if size is None:  # latent chain not conclusive: a single empty-latent node in the graph decides
        size = _single_empty_latent(w)
    if isinstance(size, tuple):
        meta.width, meta.height = size


def _join(texts: list[str]) -> str:
    """One text as stored; several (combined conditionings) stripped and joined by newlines."""
    if len(texts) == 1:
        return texts[0]
    return "\n".join(t.strip() for t in texts if t.strip())


def _single_empty_latent(w: _Walker) -> tuple[int, int] | None:
    found: list[tuple[int, int]] = []
    for nid, n in w.g.items():
        if "EmptyLatent" in str(n.get("class_type", "")) or "LatentImage" in str(n.get("class_type", "")):
            size = w.size([nid, 0])
            if isinstance(size, tuple) and size not in found:
                found.append(size)
    return found[0] if len(found) == 1 else None


def _fill_without_sampler(w: _Walker, graph: Graph, meta: ImageMetadata) -> None:
    for nid, n in graph.items():
        ctype = str(n.get("class_type", ""))
        if "TextEncode" not in ctype and "Prompt" not in ctype:
            continue
        title = str((n.get("_meta") or {}).get("title", "")).lower()
        texts = w.texts([nid, 0], "negative" if "neg" in title else "positive")
        if not texts:
            continue
        if "neg" in title:
            if meta.negative_prompt is None:
                meta.negative_prompt = _join(texts)
        elif meta.prompt is None:
            meta.prompt = _join(texts)
    for n in graph.values():
        if "EmptyLatent" in str(n.get("class_type", "")):
            ins = w.inputs(n)
            wi, hi = (
                to_int(w.value(ins.get("width"), INT_VALUE_KEYS)),
                to_int(w.value(ins.get("height"), INT_VALUE_KEYS)),
            )
            if wi and hi:
                meta.width, meta.height = wi, hi
                break


def parse_comfy(
    prompt_json: Any = None, workflow_json: Any = None, *, max_depth: int | None = None
) -> ImageMetadata | None:
    """Parse the API graph if present, else the UI workflow."""
    graph = as_api_graph(prompt_json) if prompt_json is not None else None
    meta = parse_comfy_graph(graph, max_depth=max_depth) if graph else None
    if meta is None and workflow_json is not None:
        g2 = workflow_to_api(workflow_json)
        if g2:
            meta = parse_comfy_graph(g2, max_depth=max_depth)
            if meta is not None:
                meta.params["comfyui_from_workflow"] = True
    if meta is not None:
        meta.generator = meta.generator or "comfyui"
    return meta
