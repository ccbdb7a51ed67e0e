"""AI usage preferences and embedded rights of the sandbox: every signal a training crawler must hear.

Images stream like :mod:`.optout`'s (a pause after the headers, then small chunks; the request log
records the body bytes really sent).

==========================================  ===========================================================
path                                        what it says
==========================================  ===========================================================
/aipref/                                    HTML index linking every image below (robots.txt
                                            ``Content-Signal: /aipref/$ ai-train=yes``)
/aipref/img/cs-no/<n>.png                   robots.txt ``Content-Signal: /aipref/img/cs-no/ ai-train=no``
/aipref/img/cs-yes/<n>.png                  robots.txt ``Content-Signal: /aipref/img/cs-yes/ ai-train=yes``
                                            (beats a site-wide ``--content-signal ai-train=no``)
/aipref/img/cu-no/<n>.png                   robots.txt ``Content-Usage: /aipref/img/cu-no/ train-ai=n``
/aipref/img/cu-genai-yes/<n>.png            robots.txt ``... train-ai=n, train-genai=y`` (allowed)
/aipref/img/hdr-no/<n>.png                  header ``Content-Usage: train-ai=n``
/aipref/img/hdr-genai/<n>.png               header ``Content-Usage: search=y, train-genai=n``
/aipref/img/hdr-yes/<n>.png                 header ``Content-Usage: train-ai=y`` (allowed)
/aipref/img/xmp-no/<n>.<png|jpg|webp>       XMP ``plus:DataMining`` DMI-PROHIBITED-AIMLTRAINING in the file
/aipref/img/xmp-genai/<n>.<png|jpg|webp>    XMP DMI-PROHIBITED-GENAIMLTRAINING
/aipref/img/xmp-ok/<n>.<png|jpg|webp>       XMP DMI-ALLOWED and ``Iptc4xmpExt:DigitalSourceType``
                                            trainedAlgorithmicMedia (allowed, provenance recorded)
/aipref/img/c2pa-no/<n>.<png|jpg|webp>      C2PA manifest, ``c2pa.ai_generative_training: notAllowed``
/aipref/img/c2pa-ok/<n>.<png|jpg|webp>      C2PA manifest, ``allowed`` (claim generator, actions recorded)
==========================================  ===========================================================

``--content-signal VALUE`` adds a site-wide ``Content-Signal: VALUE`` line to robots.txt (off by
default, since it speaks for the whole sandbox).
"""

from __future__ import annotations

import functools
import io
import zlib
from typing import Final

import numpy as np
from aiohttp import web
from PIL import Image, PngImagePlugin

from tests.sandbox.markup import document
from tests.sandbox.responses import html_response
from tests.sandbox.signing import manifest, sign
from tests.sandbox.streaming import stream_file_slowly

#: robots.txt lines of the ``User-agent: *`` group, all scoped to /aipref/ paths.
ROBOTS_LINES: Final = (
    "Content-Signal: /aipref/$ search=yes, ai-train=yes",  # the index, even under a site-wide "no"
    "Content-Signal: /aipref/img/cs-no/ search=yes, ai-train=no",
    "Content-Signal: /aipref/img/cs-yes/ search=yes, ai-train=yes",
    "Content-Usage: /aipref/img/cu-no/ train-ai=n",
    "Content-Usage: /aipref/img/cu-genai-yes/ train-ai=n, train-genai=y",
)
#: Header cases.
HEADER_CASES: Final[dict[str, str]] = {
    "hdr-no": "train-ai=n",
    "hdr-genai": "search=y, train-genai=n",
    "hdr-yes": "train-ai=y",
}
ROBOTS_CASES: Final = ("cs-no", "cs-yes", "cu-no", "cu-genai-yes")
PLUS_VOCAB: Final = "http://ns.useplus.org/ldf/vocab/"
IPTC_DST: Final = "http://cv.iptc.org/newscodes/digitalsourcetype/"
#: Embedded cases: (plus:DataMining value, Iptc4xmpExt:DigitalSourceType code or "").
XMP_CASES: Final[dict[str, tuple[str, str]]] = {
    "xmp-no": ("DMI-PROHIBITED-AIMLTRAINING", ""),
    "xmp-genai": ("DMI-PROHIBITED-GENAIMLTRAINING", "digitalCapture"),
    "xmp-ok": ("DMI-ALLOWED", "trainedAlgorithmicMedia"),
}
#: C2PA cases: the ``use`` of the manifest's ``c2pa.ai_generative_training`` entry.
C2PA_CASES: Final[dict[str, str]] = {"c2pa-no": "notAllowed", "c2pa-ok": "allowed"}
XMP_FORMATS: Final = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
EMBEDDED_CASES: Final = (*XMP_CASES, *C2PA_CASES)
IMAGES_PER_CASE: Final = 2


def xmp_packet(data_mining: str, source_type: str = "") -> bytes:
    """An XMP packet stating a PLUS data-mining value and (optionally) an IPTC digital source type."""
    dst = (
        f"\n   <Iptc4xmpExt:DigitalSourceType>{IPTC_DST}{source_type}</Iptc4xmpExt:DigitalSourceType>"
        if source_type
        else ""
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">\n'
        f'   <plus:DataMining rdf:resource="{PLUS_VOCAB}{data_mining}"/>{dst}\n'
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def picture(key: str, fmt: str, xmp: bytes | None = None) -> bytes:
    """A unique 64x64 noise image per key, in ``fmt`` (PNG, JPEG, WEBP), with ``xmp`` embedded."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    image = Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if xmp is not None:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        image.save(buf, format="PNG", pnginfo=info)
    else:
        image.save(buf, format=fmt, quality=90, **({"xmp": xmp} if xmp is not None else {}))
    return buf.getvalue()


@functools.lru_cache(maxsize=256)
def payload(path: str, case: str, ext: str) -> bytes:
    """The bytes served at ``path`` (the key of its noise); signed files are made once per path."""
    fmt = XMP_FORMATS[ext]
    if case in XMP_CASES:
        return picture(path, fmt, xmp_packet(*XMP_CASES[case]))
    if case in C2PA_CASES:
        return sign(picture(path, fmt), fmt, manifest(C2PA_CASES[case]))
    return picture(path, fmt)


def image_paths() -> list[str]:
    """Every image path of the site."""
    paths = [f"/aipref/img/{c}/{n}.png" for c in (*ROBOTS_CASES, *HEADER_CASES) for n in range(IMAGES_PER_CASE)]
    paths += [
        f"/aipref/img/{c}/{n}.{ext}" for c in EMBEDDED_CASES for ext in XMP_FORMATS for n in range(IMAGES_PER_CASE)
    ]
    return paths


async def aipref_image(request: web.Request) -> web.StreamResponse:
    case = request.match_info["case"]
    stem, _, ext = request.match_info["name"].partition(".")
    known = case in ROBOTS_CASES or case in HEADER_CASES or case in EMBEDDED_CASES
    if not known or not stem.isdigit() or ext not in XMP_FORMATS or (ext != "png" and case not in EMBEDDED_CASES):
        raise web.HTTPNotFound()
    body = payload(request.path, case, ext)
    headers = {"Content-Type": Image.MIME[XMP_FORMATS[ext]]}
    if case in HEADER_CASES:
        headers["Content-Usage"] = HEADER_CASES[case]
    return await stream_file_slowly(request, body, headers)


async def aipref_index(request: web.Request) -> web.Response:
    imgs = "\n".join(f'<li><img class="art" src="{p}" alt=""></li>' for p in image_paths())
    body = f"<h1>AI usage preferences</h1>\n<ul>\n{imgs}\n</ul>"
    return html_response(document("AI usage preferences", body, lang=None))


def robots_lines(content_signal: str | None) -> str:
    """The lines this site adds to the ``User-agent: *`` group of robots.txt."""
    lines = list(ROBOTS_LINES)
    if content_signal:
        lines.insert(0, f"Content-Signal: {content_signal}")
    return "".join(line + "\n" for line in lines)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/aipref/", aipref_index)
    app.router.add_get("/aipref/img/{case}/{name}", aipref_image)
