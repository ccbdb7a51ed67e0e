"""InvokeAI ``invokeai_graph``: the node graph of a generation (used when ``invokeai_metadata`` is absent).

``{"nodes": {id: {"type": ..., <fields>}}, "edges": [{"source": {"node_id", "field"},
"destination": {"node_id", "field"}}]}``.  The denoise node gives steps / cfg / scheduler; its
conditioning inputs lead (through ``collect`` nodes) to compel prompt nodes whose ``prompt`` may come
from a ``string`` node; the seed and size come from the ``noise`` node (or the denoise node itself
for FLUX); the model from the loader feeding ``unet`` / ``transformer``.
"""

from __future__ import annotations

import logging
from typing import Any

from imagecrawl.metadata.infotext import to_float, to_int
from imagecrawl.metadata.types import ImageMetadata

logger = logging.getLogger(__name__)

_MAX_HOPS = 32
_MAX_VISITS = 5_000  # total edge follows of one parse (a DAG of shared sources would be exponential)
Node = dict[str, Any]


class _Graph:
    def __init__(self, nodes: dict[str, Node], edges: list[Any]) -> None:
        self.nodes = nodes
        self.budget = _MAX_VISITS
        self.into: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for e in edges:
            if not isinstance(e, dict):
                continue
            src, dst = e.get("source"), e.get("destination")
            if isinstance(src, dict) and isinstance(dst, dict):
                key = (str(dst.get("node_id")), str(dst.get("field")))
                self.into.setdefault(key, []).append((str(src.get("node_id")), str(src.get("field"))))

    def sources(self, nid: str, field: str) -> list[tuple[str, str]]:
        found = [s for s in self.into.get((nid, field), []) if s[0] in self.nodes]
        self.budget -= len(found)
        return found if self.budget >= 0 else []

    def value(self, nid: str, field: str, hops: int = 0) -> Any:
        """A field's value, following an incoming edge to a primitive (string/integer/float) node."""
        if hops > _MAX_HOPS:
            return None
        for src, src_field in self.sources(nid, field):
            node = self.nodes[src]
            for key in (src_field, "value"):
                if key in node and not isinstance(node[key], dict):
                    got = self.value(src, key, hops + 1)
                    if got is not None:
                        return got
        return self.nodes.get(nid, {}).get(field)

    def prompt(self, nid: str, field: str, hops: int = 0) -> str | None:
        """Text of the conditioning fed into ``nid.field`` (through collect nodes)."""
        if hops > _MAX_HOPS:
            return None
        texts: list[str] = []
        for src, _ in self.sources(nid, field):
            node = self.nodes[src]
            if node.get("type") == "collect" or "item" in node or "collection" in node:
                for key in ("item", "collection"):
                    t = self.prompt(src, key, hops + 1)
                    if t and t not in texts:
                        texts.append(t)
                continue
            for key in ("prompt", "positive_prompt", "text"):
                t = self.value(src, key)
                if isinstance(t, str) and t:
                    if t not in texts:
                        texts.append(t)
                    break
        return "\n".join(texts) if texts else None

    def model(self, nid: str, hops: int = 0) -> str | None:
        if hops > _MAX_HOPS:
            return None
        for field in ("unet", "transformer", "model"):
            for src, _ in self.sources(nid, field):
                m = self.nodes[src].get("model")
                if isinstance(m, dict) and isinstance(m.get("name") or m.get("model_name"), str):
                    return str(m.get("name") or m.get("model_name"))
                found = self.model(src, hops + 1)
                if found:
                    return found
        return None


def parse_invokeai_graph(obj: Any) -> ImageMetadata | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("nodes"), dict):
        return None
    nodes = {str(k): v for k, v in obj["nodes"].items() if isinstance(v, dict)}
    edges = obj.get("edges")
    g = _Graph(nodes, edges if isinstance(edges, list) else [])
    denoise = [
        nid for nid, n in nodes.items() if "denoise" in str(n.get("type", "")) and "mask" not in str(n.get("type"))
    ]
    if not denoise:
        return None
    # the first pass: denoising starts at 0 (a hires / refiner pass starts later)
    denoise.sort(key=lambda nid: to_float(g.value(nid, "denoising_start")) or 0.0)
    did = denoise[0]
    meta = ImageMetadata(generator="invokeai")
    meta.prompt = g.prompt(did, "positive_conditioning") or g.prompt(did, "positive_text_conditioning")
    meta.negative_prompt = g.prompt(did, "negative_conditioning") or g.prompt(did, "negative_text_conditioning")
    meta.steps = to_int(g.value(did, "steps"))
    meta.cfg_scale = to_float(g.value(did, "cfg_scale"))
    if meta.cfg_scale is None:
        meta.cfg_scale = to_float(g.value(did, "guidance"))
    sched = g.value(did, "scheduler")
    meta.sampler = sched if isinstance(sched, str) else None
    meta.seed = to_int(g.value(did, "seed"))
    meta.width, meta.height = to_int(g.value(did, "width")), to_int(g.value(did, "height"))
    for src, _ in g.sources(did, "noise"):
        if meta.seed is None:
            meta.seed = to_int(g.value(src, "seed"))
        if meta.width is None:
            meta.width, meta.height = to_int(g.value(src, "width")), to_int(g.value(src, "height"))
    meta.model = g.model(did)
    meta.params["invokeai_denoise_nodes"] = len(denoise)
    meta.params["invokeai_from_graph"] = True
    if not (meta.prompt or meta.negative_prompt or meta.seed is not None or meta.steps is not None):
        return None
    return meta
