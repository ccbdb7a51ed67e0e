"""Rights and provenance embedded in an image's XMP: PLUS data mining and IPTC digital source type.

Pure (stdlib only, no Scrapy, no XML parser: ``str.find`` and bounded regexes, as
:func:`imagecrawl.metadata.containers.parse_xmp`).

* ``plus:DataMining`` (PLUS LDF, in IPTC Photo Metadata 2023.1) — a URI of the PLUS vocabulary
  ``http://ns.useplus.org/ldf/vocab/DMI-…``. Every ``DMI-PROHIBITED…`` value refuses training a
  generative model: ``-AIMLTRAINING`` and ``-GENAIMLTRAINING`` say so, ``DMI-PROHIBITED`` forbids all
  data mining, ``-EXCEPTSEARCHENGINEINDEXING`` allows only search indexing, and the
  ``-SEECONSTRAINT`` / ``-SEEEMBEDDEDRIGHTSEXPR`` / ``-SEELINKEDRIGHTSEXPR`` values defer to a
  constraint a crawler cannot evaluate (left alone: the safe side). ``DMI-ALLOWED`` and
  ``DMI-UNSPECIFIED`` do not refuse.
* ``Iptc4xmpExt:DigitalSourceType`` — a URI of the IPTC NewsCodes vocabulary
  ``http://cv.iptc.org/newscodes/digitalsourcetype/<code>`` (``trainedAlgorithmicMedia``,
  ``compositeWithTrainedAlgorithmicMedia``, ``digitalCapture``, ...). The code is kept; a value
  outside that vocabulary is kept as written.
* ``dcterms:provenance`` — where the C2PA specification puts the address of a manifest stored
  outside the file (a "remote" or external manifest). Only an ``http(s)://`` value is taken; the
  manifest is never fetched (docs/optout.md), the address is reported so that a reader can tell such a
  file from one without credentials.

Both the attribute form (``plus:DataMining="…"``), the element form
(``<plus:DataMining>…</plus:DataMining>``) and the resource form
(``<plus:DataMining rdf:resource="…"/>``) are read, whatever prefix the packet binds to the namespace.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Final

from imagecrawl.metadata import containers as c
from imagecrawl.metadata.types import Limits

PLUS_NS: Final = "http://ns.useplus.org/ldf/xmp/1.0/"
IPTC_EXT_NS: Final = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
PLUS_VOCAB: Final = "http://ns.useplus.org/ldf/vocab/"
IPTC_DST_VOCAB: Final = "http://cv.iptc.org/newscodes/digitalsourcetype/"
DCTERMS_NS: Final = "http://purl.org/dc/terms/"
XMP_PNG_KEY: Final = "XML:com.adobe.xmp"
_MAX_VALUE: Final = 512


@dataclass(frozen=True, slots=True)
class XmpRights:
    #: the ``plus:DataMining`` code (``DMI-PROHIBITED-AIMLTRAINING``, ...) or the value as written
    data_mining: str | None = None
    #: the IPTC digital source type code (``trainedAlgorithmicMedia``, ...) or the value as written
    digital_source_type: str | None = None
    #: the ``http(s)://`` address of a C2PA manifest kept outside the file (``dcterms:provenance``)
    c2pa_manifest_url: str | None = None
    #: why the file's data-mining statement could not be read to the end (a compressed XMP packet past
    #: :data:`XMP_SCAN_MAX_INFLATED_BYTES`, a damaged stream): a refusal we could not read is no permission
    unreadable: str | None = None

    @property
    def refuses_training(self) -> bool:
        """True when the file's data-mining statement forbids training a generative model."""
        return self.data_mining is not None and self.data_mining.upper().startswith("DMI-PROHIBITED")


def find_xmp(data: bytes, limits: Limits | None = None) -> str | None:
    """The XMP packet of a PNG (iTXt ``XML:com.adobe.xmp``), JPEG (APP1) or WebP (``XMP `` chunk);
    for other formats the first ``<x:xmpmeta>`` found in the bytes. None when there is none."""
    lim = limits or Limits()
    problems = c.Problems()
    fmt = c.sniff(data)
    try:
        if fmt == "PNG":
            for _ctype, key, value in c.parse_png(data, lim, problems).texts:
                if key == XMP_PNG_KEY:
                    return value
            return None
        if fmt == "JPEG":
            raw = c.parse_jpeg(data, lim, problems).xmp
            return c.decode_text(raw) if raw else None
        if fmt == "WEBP":
            raw = c.parse_webp(data, lim, problems).xmp
            return c.decode_text(raw) if raw else None
    except Exception:  # a damaged container has no readable XMP, never a crash
        return None
    if fmt is None:
        return None
    start = data.find(b"<x:xmpmeta")
    if start == -1:
        return None
    end = data.find(b"</x:xmpmeta>", start, start + lim.max_text_bytes)
    return c.decode_text(data[start : end + 12]) if end != -1 else None


def _prefixes(text: str, namespace: str, default: str) -> list[str]:
    found = re.findall(r'xmlns:([A-Za-z_][\w.-]*)\s*=\s*["\']' + re.escape(namespace) + r'["\']', text)
    return list(dict.fromkeys([*found, default]))


def _property(text: str, prefix: str, local: str) -> str | None:
    name = f"{prefix}:{local}"
    attr = re.search(re.escape(name) + r"""\s*=\s*(["'])(.{0,512}?)\1""", text, re.DOTALL)
    if attr:
        return attr.group(2)
    pos = text.find("<" + name)
    while pos != -1:
        gt = text.find(">", pos)
        if gt == -1:
            return None
        tag = text[pos : gt + 1]
        after = tag[len(name) + 1 : len(name) + 2]
        if after in (">", " ", "\t", "\n", "\r", "/"):
            resource = re.search(r"""rdf:resource\s*=\s*(["'])(.{0,512}?)\1""", tag, re.DOTALL)
            if resource:
                return resource.group(2)
            if tag.endswith("/>"):
                return None
            end = text.find("</" + name + ">", gt)
            if end == -1:
                return None
            inner = text[gt + 1 : end]
            li = re.search(r"<rdf:li\b[^>]*>(.{0,512}?)</rdf:li>", inner, re.DOTALL)
            value = li.group(1) if li else re.sub(r"<[^<>]*>", "", inner)
            return value[:_MAX_VALUE]
        pos = text.find("<" + name, pos + 1)
    return None


def _code(value: str | None, vocabulary: str) -> str | None:
    if value is None:
        return None
    value = html.unescape(value).strip()
    if not value:
        return None
    if value.lower().startswith(vocabulary):
        value = value[len(vocabulary) :].strip("/")
    return value[:_MAX_VALUE] or None


def parse_xmp_rights(text: str | None) -> XmpRights:
    """The data-mining and digital-source-type statements of an XMP packet (never raises)."""
    if not text:
        return XmpRights()
    mining = next(
        (v for p in _prefixes(text, PLUS_NS, "plus") if (v := _property(text, p, "DataMining")) is not None), None
    )
    source = next(
        (
            v
            for p in _prefixes(text, IPTC_EXT_NS, "Iptc4xmpExt")
            if (v := _property(text, p, "DigitalSourceType")) is not None
        ),
        None,
    )
    remote = next(
        (v for p in _prefixes(text, DCTERMS_NS, "dcterms") if (v := _property(text, p, "provenance")) is not None),
        None,
    )
    remote = html.unescape(remote).strip()[:_MAX_VALUE] if remote is not None else None
    return XmpRights(
        data_mining=_code(mining, PLUS_VOCAB),
        digital_source_type=_code(source, IPTC_DST_VOCAB),
        c2pa_manifest_url=remote if remote and remote.lower().startswith(("http://", "https://")) else None,
    )


#: compressed XMP (PNG iTXt/zTXt ``XML:com.adobe.xmp``) inflated at most this far, in a streaming way,
#: looking for the data-mining statement; a packet that goes on past it makes the file unreadable
XMP_SCAN_MAX_INFLATED_BYTES: Final = 64 * 1024 * 1024
_SCAN_STEP: Final = 256 * 1024
_SCAN_OVERLAP: Final = 4096
_PREFIX_BYTE = re.compile(rb"[A-Za-z0-9_.-]")
_ATTR = re.compile(r"""^[\w.-]+:DataMining\s*=\s*(["'])(.{0,512}?)\1""", re.DOTALL)
_RESOURCE = re.compile(r"""^[\w.-]+:DataMining\b[^<>]{0,1024}?rdf:resource\s*=\s*(["'])(.{0,512}?)\1""", re.DOTALL)
_ELEMENT = re.compile(r"^([\w.-]+):DataMining\s*>(.{0,4096}?)</\1:DataMining\s*>", re.DOTALL)


def _statement_at(window: bytes) -> str | None:
    """The data-mining value of a ``prefix:DataMining`` occurrence at the start of ``window`` (attribute,
    ``rdf:resource`` or element form), as a PLUS code; None if this occurrence states none."""
    text = window.decode("utf-8", "replace")
    for pattern, group in ((_ATTR, 2), (_RESOURCE, 2)):
        m = pattern.match(text)
        if m:
            return _code(m.group(group), PLUS_VOCAB)
    m = _ELEMENT.match(text)
    if m:
        inner = m.group(2)
        li = re.search(r"<rdf:li\b[^>]*>(.{0,512}?)</rdf:li>", inner, re.DOTALL)
        return _code(li.group(1) if li else re.sub(r"<[^<>]*>", "", inner), PLUS_VOCAB)
    return None


def _scan_plain(data: bytes) -> str | None:
    """The first data-mining statement anywhere in ``data`` (uncompressed XMP: JPEG APP1, WebP ``XMP ``,
    PNG tEXt/iTXt, TIFF), a prohibition first when there are several."""
    found: str | None = None
    pos = data.find(b":DataMining")
    while pos != -1:
        start = pos
        while start > 0 and pos - start < 64 and _PREFIX_BYTE.match(data, start - 1):
            start -= 1
        if start < pos:  # prefix:DataMining (the prefix is whatever the packet bound the namespace to)
            value = _statement_at(data[start : pos + 6144])
            if value is not None:
                if value.upper().startswith("DMI-PROHIBITED"):
                    return value
                found = found or value
        pos = data.find(b":DataMining", pos + 11)
    return found


def _compressed_xmp(data: bytes) -> list[bytes]:
    """The compressed payloads of a PNG's XMP text chunks (iTXt with the compression flag, zTXt)."""
    out: list[bytes] = []
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return out
    pos, size = 8, len(data)
    while pos + 8 <= size:
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        start, end = pos + 8, min(size, pos + 8 + length)
        if ctype == b"iTXt" and data.startswith(XMP_PNG_KEY.encode() + b"\0\x01", start):
            body = data[start + len(XMP_PNG_KEY) + 3 : end]
            lang_end = body.find(b"\0")
            keyword_end = body.find(b"\0", lang_end + 1) if lang_end != -1 else -1
            if keyword_end != -1:
                out.append(body[keyword_end + 1 :])
        elif ctype == b"zTXt" and data.startswith(XMP_PNG_KEY.encode() + b"\0\0", start):
            out.append(data[start + len(XMP_PNG_KEY) + 2 : end])
        if ctype == b"IEND":
            break
        pos = end + 4
    return out


def _scan_compressed(payload: bytes, cap: int) -> tuple[str | None, str | None]:
    """Inflate ``payload`` in steps (never more than ``cap`` bytes in all, never all at once) looking for
    the statement: ``(value, None)``, or ``(None, why)`` when the end could not be reached."""
    inflater = zlib.decompressobj()
    tail = b""
    total = 0
    pending = payload
    found: str | None = None
    while True:
        try:
            piece = inflater.decompress(pending, _SCAN_STEP)
        except zlib.error as exc:
            return found, None if found else f"compressed XMP is damaged ({exc})"
        pending = inflater.unconsumed_tail
        total += len(piece)
        window = tail + piece
        value = _scan_plain(window)
        if value is not None:
            if value.upper().startswith("DMI-PROHIBITED"):
                return value, None
            found = found or value
        tail = window[-_SCAN_OVERLAP:]
        if inflater.eof or (not pending and not piece):
            return found, None
        if total >= cap:
            return found, None if found else f"compressed XMP inflates past {cap} bytes"


def scan_data_mining(data: bytes, cap: int | None = None) -> tuple[str | None, str | None]:
    """The file's data-mining statement wherever its XMP is, whatever its size (no text budget applies:
    a refusal must never be skipped): ``(code or None, why it could not be read or None)``. Compressed
    packets are inflated at most ``cap`` bytes (default :data:`XMP_SCAN_MAX_INFLATED_BYTES`)."""
    cap = XMP_SCAN_MAX_INFLATED_BYTES if cap is None else cap
    value = _scan_plain(data)
    if value is not None and value.upper().startswith("DMI-PROHIBITED"):
        return value, None
    unreadable: str | None = None
    for payload in _compressed_xmp(data):
        found, why = _scan_compressed(payload, cap)
        if found is not None and found.upper().startswith("DMI-PROHIBITED"):
            return found, None
        value = value or found
        unreadable = unreadable or why
    return value, (None if value is not None else unreadable)


def read_xmp_rights(data: bytes, limits: Limits | None = None) -> XmpRights:
    """:func:`parse_xmp_rights` of the file's XMP packet; the data-mining statement is looked for in
    every XMP of the file whatever its size (:func:`scan_data_mining`), so that a text budget that skips
    a large packet never turns a refusal into silence."""
    rights = parse_xmp_rights(find_xmp(data, limits))
    if rights.refuses_training:
        return rights
    value, unreadable = scan_data_mining(data)
    if value is not None and (rights.data_mining is None or value.upper().startswith("DMI-PROHIBITED")):
        return replace(rights, data_mining=value)
    if rights.data_mining is None and unreadable is not None:
        return replace(rights, unreadable=unreadable)
    return rights
