"""Byte-level readers for the image containers: PNG chunks, JPEG segments, WebP chunks, TIFF/EXIF IFDs.

Nothing here decodes pixels.  Every reader is bounded by :class:`~imagecrawl.metadata.types.Limits`
and records problems in a :class:`Problems` collector instead of raising.
"""

from __future__ import annotations

import html
import logging
import re
import struct
import zlib
from dataclasses import dataclass, field

from imagecrawl.metadata.types import Limits, MetadataError

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# error kinds in increasing order of severity (the most severe one is reported)
_SEVERITY = {"bad_text": 1, "truncated": 2, "too_large": 3, "corrupt": 4}


@dataclass(slots=True)
class Problems:
    """Collects the typed problems met while reading one file."""

    kinds: list[str] = field(default_factory=list)

    def add(self, kind: str, what: str = "") -> None:
        logger.debug("metadata problem %s: %s", kind, what)
        self.kinds.append(kind)

    def worst(self) -> str | None:
        if not self.kinds:
            return None
        return max(self.kinds, key=lambda k: _SEVERITY.get(k, 0))


def sniff(data: bytes) -> str | None:
    """Image format from magic bytes (the file name is never trusted)."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    if data.startswith(b"\x00\x00\x00\x0cjXL \r\n\x87\n") or data.startswith(b"\xff\x0a"):
        return "JXL"
    return None


def bounded_decompress(
    payload: bytes, limits: Limits, *, wbits: int = zlib.MAX_WBITS, max_bytes: int | None = None
) -> bytes:
    """Decompress at most ``limits.max_decompressed_bytes`` (or ``max_bytes``, if smaller: what is left
    of a per-file budget); raise MetadataError('too_large') beyond."""
    cap = limits.max_decompressed_bytes if max_bytes is None else min(max_bytes, limits.max_decompressed_bytes)
    if cap <= 0:
        raise MetadataError("too_large", "the file's text budget is used up")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(payload, cap)
    except zlib.error as exc:
        raise MetadataError("bad_text", f"zlib: {exc}") from exc
    if d.unconsumed_tail:
        raise MetadataError("too_large", "decompressed payload exceeds limit")
    return out


def decode_text(raw: bytes, *, latin1_fallback: bool = True) -> str:
    """UTF-8 first (many tools write UTF-8 into tEXt), then Latin-1; trailing NULs stripped."""
    raw = raw.rstrip(b"\x00")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if latin1_fallback:
            return raw.decode("latin-1")
        return raw.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------- PNG
@dataclass(slots=True)
class PngInfo:
    width: int = 0
    height: int = 0
    bit_depth: int = 0
    color_type: int = -1
    interlace: int = 0
    #: text chunks in file order: (chunk type, key, value)
    texts: list[tuple[str, str, str]] = field(default_factory=list)
    exif: bytes | None = None
    #: (offset, length) of every IDAT chunk's data
    idat: list[tuple[int, int]] = field(default_factory=list)
    has_trns: bool = False
    complete: bool = False


def parse_png(data: bytes, limits: Limits, problems: Problems) -> PngInfo:
    """Walk every chunk (including text after IDAT) without decoding pixels."""
    info = PngInfo()
    pos = len(PNG_MAGIC)
    n = 0
    size = len(data)
    text_budget = limits.max_text_total_bytes  # every text kept from this file, together
    while True:
        if pos == size:
            problems.add("truncated", "PNG ends without IEND")
            break
        if pos + 8 > size:
            problems.add("truncated", "PNG chunk header cut")
            break
        n += 1
        if n > limits.max_chunks:
            problems.add("too_large", "too many PNG chunks")
            break
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        start = pos + 8
        end = start + length
        if length > 0x7FFFFFFF or not ctype.isalpha():
            problems.add("corrupt", f"bad PNG chunk at {pos}")
            break
        truncated = end > size
        if truncated:
            problems.add("truncated", f"PNG chunk {ctype!r} cut")
            if ctype != b"IDAT":
                break
        if ctype == b"IHDR" and length >= 13 and not truncated:
            w, h, depth, color, _comp, _filt, interlace = struct.unpack_from(">IIBBBBB", data, start)
            info.width, info.height, info.bit_depth = w, h, depth
            info.color_type, info.interlace = color, interlace
        elif ctype == b"IDAT":
            info.idat.append((start, min(length, size - start)))
        elif ctype == b"tRNS":
            info.has_trns = True
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            if length > limits.max_text_bytes:
                problems.add("too_large", f"{ctype!r} chunk of {length} bytes skipped")
            elif text_budget <= 0 or (ctype == b"tEXt" and length > text_budget):
                problems.add("too_large", f"{ctype!r} chunk skipped: the file's text budget is used up")
                text_budget = 0
            else:
                try:
                    item = _png_text(ctype, data[start:end], limits, text_budget)
                except MetadataError as exc:
                    problems.add(exc.kind, str(exc))
                    if exc.kind == "too_large" and ctype != b"tEXt" and text_budget < limits.max_decompressed_bytes:
                        text_budget = 0  # inflating it would have overrun what is left of the budget
                except (ValueError, IndexError) as exc:
                    problems.add("bad_text", str(exc))
                else:
                    if item is not None:
                        text_budget -= len(item[1])
                        info.texts.append((ctype.decode("ascii"), item[0], item[1]))
        elif ctype == b"eXIf":
            if length > limits.max_text_bytes:
                problems.add("too_large", "eXIf chunk skipped")
            elif info.exif is None:
                info.exif = data[start:end]
        elif ctype == b"IEND":
            info.complete = True
            break
        if truncated:
            break
        pos = end + 4  # skip CRC
    return info


def _png_text(ctype: bytes, body: bytes, limits: Limits, budget: int) -> tuple[str, str] | None:
    key_raw, sep, rest = body.partition(b"\x00")
    if not sep:
        raise MetadataError("bad_text", "text chunk without key separator")
    key = key_raw.decode("latin-1")
    if ctype == b"tEXt":
        return key, decode_text(rest)
    if ctype == b"zTXt":
        if not rest:
            raise MetadataError("bad_text", "empty zTXt")
        return key, decode_text(bounded_decompress(rest[1:], limits, max_bytes=budget))
    # iTXt: compression flag, method, language\0, translated keyword\0, text (always UTF-8)
    if len(rest) < 2:
        raise MetadataError("bad_text", "short iTXt")
    flag = rest[0]
    rest = rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _tkey, _, raw = rest.partition(b"\x00")
    if flag:
        raw = bounded_decompress(raw, limits, max_bytes=budget)
    return key, decode_text(raw)


# --------------------------------------------------------------------------------------------- JPEG
@dataclass(slots=True)
class JpegInfo:
    #: every APP1 Exif payload (TIFF bytes), in file order
    exifs: list[bytes] = field(default_factory=list)
    xmp: bytes | None = None
    comments: list[bytes] = field(default_factory=list)


_XMP_SIG = b"http://ns.adobe.com/xap/1.0/\x00"


def parse_jpeg(data: bytes, limits: Limits, problems: Problems) -> JpegInfo:
    """Read APP1 (Exif, XMP) and COM segments up to the start of scan."""
    info = JpegInfo()
    pos = 2
    size = len(data)
    n = 0
    kept = 0  # comment bytes kept: one total per file
    while pos < size:
        n += 1
        if n > limits.max_chunks:
            problems.add("too_large", "too many JPEG segments")
            break
        if data[pos] != 0xFF:
            problems.add("corrupt", f"JPEG marker expected at {pos}")
            break
        marker = data[pos + 1] if pos + 1 < size else -1
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD9, 0xDA) or marker == -1:  # EOI / start of scan: no metadata after this
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if pos + 4 > size:
            problems.add("truncated", "JPEG segment header cut")
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            problems.add("corrupt", "JPEG segment length < 2")
            break
        seg_start, seg_end = pos + 4, pos + 2 + length
        if seg_end > size:
            problems.add("truncated", "JPEG segment cut")
            break
        if marker == 0xE1:
            seg = data[seg_start:seg_end]
            if seg.startswith(b"Exif\x00") and len(info.exifs) < 4:
                info.exifs.append(seg[6:])
            elif seg.startswith(_XMP_SIG) and info.xmp is None:
                info.xmp = seg[len(_XMP_SIG) :]
        elif marker == 0xFE:
            if kept + seg_end - seg_start <= limits.max_text_total_bytes:
                info.comments.append(data[seg_start:seg_end])
                kept += seg_end - seg_start
            else:
                problems.add("too_large", "JPEG comment skipped: the file's text budget is used up")
        pos = seg_end
    else:
        problems.add("truncated", "JPEG ends before start of scan")
    # entropy-coded data cannot contain FF D9, so a JPEG without it near its end was cut short
    if b"\xff\xd9" not in data[-65536:]:
        problems.add("truncated", "JPEG without end-of-image marker")
    return info


# --------------------------------------------------------------------------------------------- WebP
@dataclass(slots=True)
class WebpInfo:
    exif: bytes | None = None
    xmp: bytes | None = None
    has_alpha: bool = False
    lossless: bool = False
    animated: bool = False
    width: int = 0
    height: int = 0


def parse_webp(data: bytes, limits: Limits, problems: Problems) -> WebpInfo:
    info = WebpInfo()
    pos = 12
    size = len(data)
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > size:
        problems.add("truncated", "RIFF shorter than declared")
    n = 0
    while pos + 8 <= size:
        n += 1
        if n > limits.max_chunks:
            problems.add("too_large", "too many WebP chunks")
            break
        fourcc = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        start, end = pos + 8, pos + 8 + length
        if end > size:
            problems.add("truncated", f"WebP chunk {fourcc!r} cut")
            if fourcc not in (b"VP8 ", b"VP8L", b"VP8X"):
                break
        body = data[start:end]
        if fourcc == b"VP8X" and len(body) >= 10:
            flags = body[0]
            info.has_alpha = bool(flags & 0x10)
            info.animated = bool(flags & 0x02)
            info.width = 1 + int.from_bytes(body[4:7], "little")
            info.height = 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"VP8L" and len(body) >= 5:
            info.lossless = True
            bits = int.from_bytes(body[1:5], "little")
            if not info.width:
                info.width = 1 + (bits & 0x3FFF)
                info.height = 1 + ((bits >> 14) & 0x3FFF)
            if (bits >> 28) & 1:
                info.has_alpha = True
        elif fourcc == b"VP8 " and len(body) >= 10 and not info.width:
            info.width = int.from_bytes(body[6:8], "little") & 0x3FFF
            info.height = int.from_bytes(body[8:10], "little") & 0x3FFF
        elif fourcc == b"ALPH":
            info.has_alpha = True
        elif fourcc == b"EXIF" and info.exif is None:
            if length > limits.max_text_bytes:
                problems.add("too_large", "WebP EXIF chunk skipped")
            else:
                info.exif = body[6:] if body.startswith(b"Exif\x00\x00") else body
        elif fourcc == b"XMP " and info.xmp is None:
            if length > limits.max_text_bytes:
                problems.add("too_large", "WebP XMP chunk skipped")
            else:
                info.xmp = body
        pos = end + (length & 1)
    return info


# --------------------------------------------------------------------------------------- TIFF / EXIF
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
TAG_USER_COMMENT = 0x9286
TAG_EXIF_IFD = 0x8769
TAG_XMP = 0x02BC
#: tags that can carry generation metadata (a skipped oversized one is reported as too_large)
METADATA_TAGS = frozenset({TAG_USER_COMMENT, TAG_XMP, 0x010E, 0x010F, 0x0110, 0x0131, 0x9C9C})


@dataclass(slots=True)
class Exif:
    """Raw tag values: ``ifd0`` and ``exif`` map tag -> (type, value bytes)."""

    big_endian: bool = False
    ifd0: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    exif: dict[int, tuple[int, bytes]] = field(default_factory=dict)


def parse_tiff(tiff: bytes, limits: Limits, problems: Problems) -> Exif | None:
    """Parse IFD0 and the Exif sub-IFD of a TIFF structure (EXIF payload)."""
    if tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        problems.add("corrupt", "bad TIFF header")
        return None
    bo = ">" if tiff[:2] == b"MM" else "<"
    out = Exif(big_endian=bo == ">")
    (off0,) = struct.unpack_from(bo + "I", tiff, 4)
    visited: set[int] = set()
    _read_ifd(tiff, bo, off0, out.ifd0, visited, limits, problems)
    sub = out.ifd0.get(TAG_EXIF_IFD)
    if sub is not None and len(sub[1]) >= 4:
        (off,) = struct.unpack_from(bo + "I", sub[1], 0)
        _read_ifd(tiff, bo, off, out.exif, visited, limits, problems)
    return out


def _read_ifd(
    tiff: bytes,
    bo: str,
    off: int,
    tags: dict[int, tuple[int, bytes]],
    visited: set[int],
    limits: Limits,
    problems: Problems,
) -> None:
    if off in visited or off + 2 > len(tiff) or off < 8:
        if off not in visited:
            problems.add("corrupt", f"IFD offset {off} out of range")
        return
    visited.add(off)
    (count,) = struct.unpack_from(bo + "H", tiff, off)
    for i in range(min(count, 1000)):
        e = off + 2 + 12 * i
        if e + 12 > len(tiff):
            problems.add("truncated", "IFD entry cut")
            return
        tag, typ, cnt = struct.unpack_from(bo + "HHI", tiff, e)
        nbytes = _TYPE_SIZES.get(typ, 1) * cnt
        if nbytes <= 4:
            value = tiff[e + 8 : e + 8 + nbytes]
        else:
            (voff,) = struct.unpack_from(bo + "I", tiff, e + 8)
            if nbytes > limits.max_text_bytes:
                if tag in METADATA_TAGS:
                    problems.add("too_large", f"EXIF tag {tag:#x} of {nbytes} bytes skipped")
                continue
            if voff + nbytes > len(tiff):
                problems.add("truncated", f"EXIF tag {tag:#x} value out of range")
                value = tiff[voff : len(tiff)]
            else:
                value = tiff[voff : voff + nbytes]
        tags.setdefault(tag, (typ, value))


def decode_exif_ascii(raw: bytes) -> str:
    """ASCII/UNDEFINED tag as text: NULs on both ends stripped (NovelAI prefixes 4 NULs), UTF-8 first."""
    return decode_text(raw.strip(b"\x00"))


def decode_user_comment(raw: bytes, *, big_endian_tiff: bool = False) -> str:
    """EXIF UserComment: honour the 8-byte charset header (and its absence); UTF-16 order guessed."""
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if body and 0 not in body:  # some writers put UTF-8 after the UNICODE header
            try:
                return body.decode("utf-8").rstrip("\x00")
            except UnicodeDecodeError:
                pass
        return _decode_utf16_guess(body, big_endian_tiff)
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return decode_text(body).strip("\x00")
    if prefix == b"JIS\x00\x00\x00\x00\x00":
        try:
            return body.rstrip(b"\x00").decode("shift_jis")
        except UnicodeDecodeError:
            return decode_text(body)
    # no header at all (ComfyUI SaveImagePlus); maybe raw UTF-16
    if _looks_utf16(raw):
        return _decode_utf16_guess(raw, big_endian_tiff)
    return decode_text(raw).strip("\x00")


def _looks_utf16(raw: bytes) -> bool:
    sample = raw[:256]
    if len(sample) < 4:
        return False
    return sample.count(0) * 3 >= len(sample)


def _decode_utf16_guess(body: bytes, big_endian_tiff: bool) -> str:
    if body.startswith(b"\xfe\xff"):
        enc, body = "utf-16-be", body[2:]
    elif body.startswith(b"\xff\xfe"):
        enc, body = "utf-16-le", body[2:]
    else:
        # ASCII characters leave a NUL in the high byte; the parameters line is ASCII even when the
        # prompt is not, so look at the start and the end of the text
        tail = max(0, len(body) - 4096)
        sample = body[:4096] + body[tail - tail % 2 :]
        even = sample[0::2].count(0)
        odd = sample[1::2].count(0)
        if even > odd:
            enc = "utf-16-be"
        elif odd > even:
            enc = "utf-16-le"
        else:
            enc = "utf-16-be" if big_endian_tiff else "utf-16-le"
    if len(body) % 2:
        body = body[:-1]
    return body.decode(enc, errors="replace").rstrip("\x00")


# ---------------------------------------------------------------------------------------------- XMP
XMP_NAMES = (
    "exif:UserComment",
    "dc:description",
    "xmp:CreatorTool",
    "tiff:Software",
    "tiff:ImageDescription",
    "photoshop:Instructions",
    "xmp:Label",
)
_TAG = re.compile(r"<[^<>]*>")  # stops at the next "<": linear time


def parse_xmp(raw: bytes | str, names: tuple[str, ...] = XMP_NAMES) -> dict[str, str]:
    """{qualified name: text} for a few well-known XMP properties.

    Read with ``str.find`` (linear time, no XML parser, no entity expansion); both the element form
    (``<dc:description><rdf:Alt><rdf:li>...``) and the attribute form (``exif:UserComment="..."``).
    """
    text = raw if isinstance(raw, str) else decode_text(raw)
    out: dict[str, str] = {}
    for name in names:
        value = _xmp_element(text, name)
        if value is None:
            value = _xmp_attribute(text, name)
        if value is not None:
            out[name] = html.unescape(value.strip())
    return out


def _xmp_element(text: str, name: str) -> str | None:
    open_tag = "<" + name
    start = text.find(open_tag)
    while start != -1:
        after = text[start + len(open_tag) : start + len(open_tag) + 1]
        if after in (">", " ", "\t", "\n", "\r", "/"):  # the element itself, not a longer name
            gt = text.find(">", start)
            if gt == -1 or text[gt - 1] == "/":  # unterminated, or an empty element
                return None
            end = text.find("</" + name + ">", gt)
            if end == -1:
                return None
            inner = text[gt + 1 : end]
            li = _first_li(inner)
            return li if li is not None else _TAG.sub("", inner)
        start = text.find(open_tag, start + 1)
    return None


def _first_li(inner: str) -> str | None:
    """Content of the first ``<rdf:li ...>...</rdf:li>`` (str.find only: linear time)."""
    pos = inner.find("<rdf:li")
    while pos != -1:
        after = inner[pos + 7 : pos + 8]
        if after in (">", " ", "\t", "\n", "\r"):
            gt = inner.find(">", pos)
            if gt == -1:
                return None
            end = inner.find("</rdf:li>", gt)
            return None if end == -1 else inner[gt + 1 : end]
        pos = inner.find("<rdf:li", pos + 1)
    return None


def _xmp_attribute(text: str, name: str) -> str | None:
    m = re.search(re.escape(name) + r'\s*=\s*"([^"]*)"', text)
    if m:
        return m.group(1)
    m = re.search(re.escape(name) + r"\s*=\s*'([^']*)'", text)
    return m.group(1) if m else None
