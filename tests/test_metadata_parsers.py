"""Unit tests on small synthetic files made here with Pillow / raw bytes, one family per section."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imagecrawl.metadata import ImageMetadata, Limits, MetadataError, extract_metadata
from imagecrawl.metadata.comfyui import parse_comfy, workflow_to_api
from imagecrawl.metadata.containers import decode_user_comment, parse_xmp
from imagecrawl.metadata.infotext import parse_hash_list, parse_infotext, parse_params_line

# ------------------------------------------------------------------------------------------ builders
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_bytes(
    texts: list[tuple[str, str, str]] | None = None,
    *,
    size: tuple[int, int] = (8, 8),
    mode: str = "RGB",
    exif: bytes | None = None,
) -> bytes:
    """A PNG with text chunks ``(kind, key, value)``; kind in tEXt, zTXt, iTXt, iTXt-z."""
    im = Image.new(mode, size, (10, 20, 30, 255)[: len(mode)] if mode != "L" else 10)
    info = PngInfo()
    for kind, key, value in texts or []:
        if kind == "tEXt":
            info.add_text(key, value)
        elif kind == "zTXt":
            info.add_text(key, value, zip=True)
        elif kind == "iTXt":
            info.add_itxt(key, value)
        elif kind == "iTXt-z":
            info.add_itxt(key, value, zip=True)
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"pnginfo": info}
    if exif is not None:
        kwargs["exif"] = exif
    im.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def add_chunks(png: bytes, chunks: list[bytes], *, after_idat: bool = True) -> bytes:
    """Insert raw chunks before IEND (after IDAT) or right after IHDR."""
    if after_idat:
        iend = png.rindex(b"IEND") - 4
        return png[:iend] + b"".join(chunks) + png[iend:]
    pos = 8 + 8 + 13 + 4
    return png[:pos] + b"".join(chunks) + png[pos:]


Entry = tuple[int, int, bytes]  # tag, type, value bytes


def tiff(ifd0: list[Entry], exif_ifd: list[Entry] | None = None, *, big_endian: bool = False) -> bytes:
    """A minimal TIFF/EXIF structure with IFD0 (+ an Exif sub-IFD)."""
    bo = ">" if big_endian else "<"
    entries0 = list(ifd0)
    if exif_ifd:
        entries0.append((0x8769, 4, b"\0\0\0\0"))  # patched below
    entries0.sort(key=lambda e: e[0])
    header = (b"MM" if big_endian else b"II") + struct.pack(bo + "HI", 42, 8)
    ifd0_size = 2 + 12 * len(entries0) + 4
    exif_entries = sorted(exif_ifd or [], key=lambda e: e[0])
    exif_off = 8 + ifd0_size
    exif_size = 2 + 12 * len(exif_entries) + 4 if exif_ifd else 0
    data_off = exif_off + exif_size
    data = b""

    def build(entries: list[Entry]) -> bytes:
        nonlocal data
        out = struct.pack(bo + "H", len(entries))
        for tag, typ, value in entries:
            if tag == 0x8769:
                value = struct.pack(bo + "I", exif_off)
            unit = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1}[typ]
            count = len(value) // unit
            if len(value) <= 4:
                out += struct.pack(bo + "HHI", tag, typ, count) + value.ljust(4, b"\0")
            else:
                off = data_off + len(data)
                data += value + (b"\0" if len(value) % 2 else b"")
                out += struct.pack(bo + "HHII", tag, typ, count, off)
        return out + b"\0\0\0\0"

    body0 = build(entries0)
    body1 = build(exif_entries) if exif_ifd else b""
    return header + body0 + body1 + data


def user_comment(text: str, encoding: str) -> bytes:
    if encoding == "utf-16-be":
        return b"UNICODE\0" + text.encode("utf-16-be")
    if encoding == "utf-16-le":
        return b"UNICODE\0" + text.encode("utf-16-le")
    if encoding == "ascii":
        return b"ASCII\0\0\0" + text.encode("utf-8")
    return text.encode("utf-8")  # no header


def jpeg_bytes(exif: bytes | None = None, *, comment: bytes | None = None, xmp: bytes | None = None) -> bytes:
    im = Image.new("RGB", (16, 16), (200, 100, 50))
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if exif is not None:
        kwargs["exif"] = b"Exif\0\0" + exif
    if comment is not None:
        kwargs["comment"] = comment
    if xmp is not None:
        kwargs["xmp"] = xmp
    im.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def webp_bytes(exif: bytes | None = None, *, mode: str = "RGB", im: Image.Image | None = None) -> bytes:
    im = im or Image.new(mode, (16, 16), (1, 2, 3, 255)[: len(mode)])
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"lossless": True}
    if exif is not None:
        kwargs["exif"] = exif
    im.save(buf, "WEBP", **kwargs)
    return buf.getvalue()


def stealth_image(
    payload: str, *, size: tuple[int, int] = (64, 64), mode: str = "alpha", compressed: bool = False
) -> Image.Image:
    """Encode like the A1111 stealth-pnginfo extension: LSBs, column-major, MSB first."""
    raw = payload.encode("utf-8")
    if compressed:
        raw = gzip.compress(raw)
    kind = ("pngcomp" if compressed else "pnginfo") if mode == "alpha" else ("rgbcomp" if compressed else "rgbinfo")
    header = f"stealth_{kind}".encode() + struct.pack(">I", len(raw) * 8)
    bits = np.unpackbits(np.frombuffer(header + raw, dtype=np.uint8))
    w, h = size
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    if mode == "alpha":
        plane = np.zeros(w * h, dtype=np.uint8)
        assert bits.size <= plane.size
        plane[: bits.size] = bits
        arr[:, :, 3] = (arr[:, :, 3] & 0xFE) | plane.reshape(w, h).T
    else:
        flat = np.zeros(w * h * 3, dtype=np.uint8)
        assert bits.size <= flat.size
        flat[: bits.size] = bits
        arr[:, :, :3] = (arr[:, :, :3] & 0xFE) | flat.reshape(w, h, 3).transpose(1, 0, 2)
    return Image.fromarray(arr, "RGBA")


def save_png(im: Image.Image, texts: list[tuple[str, str]] | None = None) -> bytes:
    info = PngInfo()
    for k, v in texts or []:
        info.add_text(k, v)
    buf = io.BytesIO()
    im.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


INFOTEXT = (
    "masterpiece, 1girl,\nsecond line of prompt, (quoted: 1.2)\n"
    "Negative prompt: lowres, bad hands\nextra negative line\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 4242424242, "
    "Size: 832x1216, Model hash: 45a21ea00a, Model: illustrious_v1, Denoising strength: 0.4, "
    'Hires upscale: 1.5, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, Lora hashes: "lora_a: 0123abcd, '
    'lora_b: 4567ef01", TI hashes: "easyneg: aaaa1111", ADetailer prompt: "face, smile, detailed", '
    'Hashes: {"model": "45a21ea00a", "lora:lora_a": "0123abcd"}, Version: v1.10.1'
)


def check_infotext(meta: ImageMetadata) -> None:
    assert meta.prompt == "masterpiece, 1girl,\nsecond line of prompt, (quoted: 1.2)"
    assert meta.negative_prompt == "lowres, bad hands\nextra negative line"
    assert meta.steps == 28 and meta.seed == 4242424242 and meta.cfg_scale == 6.5
    assert meta.sampler == "DPM++ 2M" and meta.model == "illustrious_v1"
    assert (meta.width, meta.height) == (832, 1216)
    assert meta.params["Schedule type"] == "Karras"
    assert meta.params["Lora hashes"] == {"lora_a": "0123abcd", "lora_b": "4567ef01"}
    assert meta.params["TI hashes"] == {"easyneg": "aaaa1111"}
    assert meta.params["ADetailer prompt"] == "face, smile, detailed"
    assert meta.params["Hashes"] == {"model": "45a21ea00a", "lora:lora_a": "0123abcd"}
    assert meta.params["Hires upscale"] == 1.5 and meta.params["Hires steps"] == 10
    assert meta.params["Hires upscaler"] == "R-ESRGAN 4x+"
    assert meta.params["Denoising strength"] == 0.4
    json.dumps(meta.to_dict())


# ------------------------------------------------------------------------------------ A1111 infotext
class TestInfotext:
    def test_params_line_quotes_and_json(self) -> None:
        p = parse_params_line(
            'Steps: 20, Lora hashes: "a: b, c: d", Civitai resources: [{"x": 1, "y": "p, q"}], '
            "Size: 512x768, Empty: , Last: z"
        )
        assert p["Steps"] == "20" and p["Lora hashes"] == "a: b, c: d"
        assert p["Civitai resources"] == [{"x": 1, "y": "p, q"}]
        assert p["Size"] == "512x768" and p["Last"] == "z"

    def test_hash_list(self) -> None:
        assert parse_hash_list("a: b, c d: e") == {"a": "b", "c d": "e"}

    def test_full_infotext(self) -> None:
        meta = parse_infotext(INFOTEXT)
        assert meta is not None
        check_infotext(meta)

    def test_without_negative_prompt(self) -> None:
        meta = parse_infotext("a cat\nSteps: 5, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64")
        assert meta is not None and meta.prompt == "a cat" and meta.negative_prompt is None
        assert meta.sampler == "Euler a"

    def test_empty_prompt_with_negative(self) -> None:
        meta = parse_infotext("Negative prompt: ugly\nSteps: 5, Sampler: Euler, Seed: 3")
        assert meta is not None and meta.prompt == "" and meta.negative_prompt == "ugly"

    def test_extension_lines_after_params(self) -> None:
        text = "a {red|blue} car\nSteps: 5, Sampler: Euler, Seed: 3\nTemplate: a {red|blue} car\nNegative Template: x"
        meta = parse_infotext(text)
        assert meta is not None and meta.prompt == "a {red|blue} car" and meta.seed == 3
        assert meta.params["Template"] == "a {red|blue} car"

    def test_blank_lines_and_crlf_kept_inside(self) -> None:
        text = "line one, \r\nline two\r\n\nNegative prompt: bad \r\n\nSteps: 20, Sampler: Euler, Seed: 9"
        meta = parse_infotext(text)
        assert meta is not None and meta.prompt == "line one, \r\nline two" and meta.negative_prompt == "bad"

    def test_plain_text_is_not_infotext(self) -> None:
        assert parse_infotext("just a photo caption, nothing else") is None


# ------------------------------------------------------------------------------------------ PNG text
class TestPngText:
    @pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt", "iTXt-z"])
    def test_parameters_in_every_text_chunk(self, kind: str) -> None:
        meta = extract_metadata(png_bytes([(kind, "parameters", INFOTEXT)]))
        check_infotext(meta)
        assert meta.metadata_source == "png:parameters" and meta.generator == "a1111"
        assert meta.image_format == "PNG" and meta.error is None

    def test_text_after_idat(self) -> None:
        body = b"parameters\0\0" + zlib.compress(INFOTEXT.encode())
        meta = extract_metadata(add_chunks(png_bytes(), [chunk(b"zTXt", body)], after_idat=True))
        check_infotext(meta)

    def test_utf8_in_text_and_trailing_nul(self) -> None:
        text = "猫, テスト\nSteps: 20, Sampler: Euler, Seed: 7, Model: m\x00"
        body = b"parameters\0" + text.encode("utf-8")
        meta = extract_metadata(add_chunks(png_bytes(), [chunk(b"tEXt", body)], after_idat=False))
        assert meta.prompt == "猫, テスト" and meta.model == "m" and meta.seed == 7

    def test_latin1_fallback(self) -> None:
        body = b"parameters\0caf\xe9\nSteps: 20, Sampler: Euler, Seed: 7"
        meta = extract_metadata(add_chunks(png_bytes(), [chunk(b"tEXt", body)]))
        assert meta.prompt == "café"

    def test_exif_chunk(self) -> None:
        t = tiff([], [(0x9286, 7, user_comment(INFOTEXT, "utf-16-be"))])
        data = add_chunks(png_bytes(), [chunk(b"eXIf", t)], after_idat=False)
        meta = extract_metadata(data)
        check_infotext(meta)
        assert meta.metadata_source == "exif:usercomment"

    def test_fooocus_a1111_scheme(self) -> None:
        meta = extract_metadata(png_bytes([("tEXt", "parameters", INFOTEXT), ("tEXt", "fooocus_scheme", "a1111")]))
        assert meta.generator == "fooocus"


# -------------------------------------------------------------------------------------- EXIF carriers
class TestExif:
    @pytest.mark.parametrize("big_endian_tiff", [False, True])
    @pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
    def test_usercomment_both_utf16_orders_jpeg(self, encoding: str, big_endian_tiff: bool) -> None:
        t = tiff([], [(0x9286, 7, user_comment(INFOTEXT, encoding))], big_endian=big_endian_tiff)
        meta = extract_metadata(jpeg_bytes(t))
        check_infotext(meta)
        assert meta.metadata_source == "exif:usercomment" and meta.image_format == "JPEG"

    @pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le", "ascii", "none"])
    def test_usercomment_webp(self, encoding: str) -> None:
        t = tiff([], [(0x9286, 7, user_comment(INFOTEXT, encoding))])
        meta = extract_metadata(webp_bytes(t))
        check_infotext(meta)
        assert meta.image_format == "WEBP"

    def test_webp_exif_with_exif_prefix(self) -> None:
        t = tiff([], [(0x9286, 7, user_comment(INFOTEXT, "utf-16-be"))])
        check_infotext(extract_metadata(webp_bytes(b"Exif\0\0" + t)))

    def test_cjk_utf16_order_guess(self) -> None:
        text = "猫と犬のテスト, abc\nSteps: 20, Sampler: Euler, Seed: 7"
        for enc in ("utf-16-be", "utf-16-le"):
            assert decode_user_comment(user_comment(text, enc)) == text

    def test_cjk_only_prompt_big_endian_in_little_endian_tiff(self) -> None:
        text = "猫" * 3000 + "\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 512x512"
        t = tiff([], [(0x9286, 7, user_comment(text, "utf-16-be"))], big_endian=False)
        meta = extract_metadata(jpeg_bytes(t))
        assert meta.prompt == "猫" * 3000 and meta.seed == 7

    def test_usercomment_in_ifd0_no_header(self) -> None:
        graph = comfy_basic_graph()
        payload = json.dumps({"prompt": graph, "workflow": {"nodes": []}})
        meta = extract_metadata(jpeg_bytes(tiff([(0x9286, 2, payload.encode() + b"\0")])))
        assert meta.metadata_source == "exif:ifd0" and meta.generator == "comfyui"
        assert meta.prompt == "a red fox" and meta.seed == 1234

    @pytest.mark.parametrize(
        ("tags", "fmt"),
        [
            ({0x0110: "prompt:", 0x010F: "workflow:"}, "webp"),  # core SaveAnimatedWEBP
            ({0x010F: "Prompt: ", 0x010E: "Workflow: "}, "jpeg"),  # Save Image Extended
        ],
    )
    def test_comfy_prefixed_ifd0_tags(self, tags: dict[int, str], fmt: str) -> None:
        graph = json.dumps(comfy_basic_graph())
        workflow = json.dumps({"nodes": [], "links": []})
        entries = []
        for tag, prefix in tags.items():
            value = graph if prefix.lower().startswith("prompt") else workflow
            entries.append((tag, 2, (prefix + value).encode() + b"\0"))
        t = tiff(entries)
        data = webp_bytes(t) if fmt == "webp" else jpeg_bytes(t)
        meta = extract_metadata(data)
        assert meta.metadata_source == "exif:ifd0" and meta.prompt == "a red fox" and meta.steps == 25

    def test_novelai_webp(self) -> None:
        comment = json.dumps(
            {
                "prompt": "1girl, テスト",
                "uc": "lowres",
                "steps": 28,
                "scale": 5.0,
                "seed": 99,
                "sampler": "k_euler_ancestral",
                "width": 832,
                "height": 1216,
            }
        )
        uc = b"ASCII\0\0\0" + json.dumps({"Comment": comment}).encode()
        t = tiff(
            [
                (0x0131, 2, b"NovelAI Diffusion V4.5 C02D4F98\0"),
                (0x010E, 2, b"\0\0\0\x001girl, \xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88\0"),
            ],
            [(0x9286, 7, uc)],
            big_endian=True,
        )
        meta = extract_metadata(webp_bytes(t))
        assert meta.generator == "novelai" and meta.prompt == "1girl, テスト"
        assert meta.model == "NovelAI Diffusion V4.5 C02D4F98" and meta.seed == 99
        assert (meta.width, meta.height) == (832, 1216) and meta.negative_prompt == "lowres"

    def test_infotext_in_image_description(self) -> None:
        meta = extract_metadata(jpeg_bytes(tiff([(0x010E, 2, INFOTEXT.encode() + b"\0")])))
        check_infotext(meta)
        assert meta.metadata_source == "exif:ifd0"

    def test_swarmui_utf16le(self) -> None:
        payload = json.dumps(
            {
                "sui_image_params": {
                    "prompt": "a castle",
                    "negativeprompt": "blurry",
                    "model": "sdxl_base",
                    "seed": 5,
                    "steps": 30,
                    "cfgscale": 6.0,
                    "width": 1024,
                    "height": 768,
                    "sampler": "euler",
                    "scheduler": "normal",
                }
            },
            indent=2,
        )
        meta = extract_metadata(jpeg_bytes(tiff([], [(0x9286, 7, user_comment(payload, "utf-16-le"))])))
        assert meta.generator == "swarmui" and meta.prompt == "a castle" and meta.height == 768
        assert meta.params["scheduler"] == "normal"


# ------------------------------------------------------------------------------------------ stealth
class TestStealth:
    @pytest.mark.parametrize("compressed", [False, True])
    @pytest.mark.parametrize("size", [(96, 64), (300, 200), (300, 30), (3, 2000), (2, 6000)])
    def test_alpha_modes(self, compressed: bool, size: tuple[int, int]) -> None:
        im = stealth_image(INFOTEXT, size=size, compressed=compressed)
        meta = extract_metadata(save_png(im))
        check_infotext(meta)
        assert meta.metadata_source == "stealth-alpha"

    @pytest.mark.parametrize("compressed", [False, True])
    def test_rgb_modes(self, compressed: bool) -> None:
        im = stealth_image(INFOTEXT, size=(60, 50), mode="rgb", compressed=compressed)
        check_infotext(extract_metadata(save_png(im.convert("RGB"))))

    def test_novelai_stealth_json(self) -> None:
        inner = {"prompt": "a fox", "uc": "bad", "steps": 20, "scale": 6, "seed": 3, "sampler": "k_euler"}
        payload = json.dumps(
            {
                "Description": "a fox",
                "Software": "NovelAI",
                "Source": "NAI v4 1234",
                "Comment": json.dumps(inner),
            }
        )
        meta = extract_metadata(save_png(stealth_image(payload, size=(80, 80), compressed=True)))
        assert meta.generator == "novelai" and meta.model == "NAI v4 1234" and meta.prompt == "a fox"

    def test_stealth_in_lossless_webp(self) -> None:
        meta = extract_metadata(webp_bytes(im=stealth_image(INFOTEXT, size=(64, 64), compressed=True)))
        check_infotext(meta)
        assert meta.image_format == "WEBP" and meta.metadata_source == "stealth-alpha"

    def test_text_chunk_wins_over_stealth(self) -> None:
        im = stealth_image("stealth copy\nSteps: 1, Sampler: Euler, Seed: 1", size=(64, 64))
        meta = extract_metadata(save_png(im, [("parameters", INFOTEXT)]))
        check_infotext(meta)
        assert meta.metadata_source == "png:parameters"

    def test_random_alpha_is_not_stealth(self) -> None:
        arr = np.random.default_rng(5).integers(0, 256, size=(200, 200, 4), dtype=np.uint8)
        meta = extract_metadata(save_png(Image.fromarray(arr, "RGBA")))
        assert not meta.found() and meta.error is None

    def test_declared_length_beyond_image(self) -> None:
        im = stealth_image("x", size=(16, 16))
        arr = np.asarray(im).copy()
        bits = np.unpackbits(np.frombuffer(b"stealth_pnginfo" + struct.pack(">I", 10**6), dtype=np.uint8))
        plane = (arr[:, :, 3] & 0xFE).T.reshape(-1)
        plane[: bits.size] |= bits
        arr[:, :, 3] = plane.reshape(16, 16).T
        meta = extract_metadata(save_png(Image.fromarray(arr, "RGBA")))
        assert not meta.found() and meta.error == "corrupt"

    def test_stealth_over_pixel_limit_is_skipped(self) -> None:
        im = stealth_image(INFOTEXT, size=(96, 64))
        meta = extract_metadata(save_png(im), limits=Limits(max_stealth_pixels=100))
        assert not meta.found() and meta.error == "too_large"


# ------------------------------------------------------------------------------------------ ComfyUI
def comfy_basic_graph() -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "10": {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": "detail.safetensors",
                "strength_model": 0.8,
                "strength_clip": 1,
                "model": ["4", 0],
                "clip": ["4", 1],
            },
        },
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 1216, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["10", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1234,
                "steps": 25,
                "cfg": 6.5,
                "sampler_name": "euler",
                "scheduler": "karras",
                "denoise": 1.0,
                "model": ["10", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
    }


class TestComfy:
    def test_basic_png(self) -> None:
        data = png_bytes([("tEXt", "prompt", json.dumps(comfy_basic_graph())), ("tEXt", "workflow", "{}")])
        meta = extract_metadata(data)
        assert meta.metadata_source == "png:comfyui" and meta.generator == "comfyui"
        assert (meta.prompt, meta.negative_prompt) == ("a red fox", "blurry")
        assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler) == (1234, 25, 6.5, "euler")
        assert meta.model == "base.safetensors" and (meta.width, meta.height) == (832, 1216)
        assert meta.params["scheduler"] == "karras"
        assert meta.params["loras"] == [{"name": "detail.safetensors", "strength_model": 0.8, "strength_clip": 1}]

    def test_sdxl_combiners_primitives_and_hires_pass(self) -> None:
        g = comfy_basic_graph()
        g["20"] = {"class_type": "PrimitiveString", "inputs": {"value": "castle on a hill"}}
        g["21"] = {"class_type": "Int Literal", "inputs": {"int": 777}}
        g["22"] = {
            "class_type": "CLIPTextEncodeSDXL",
            "inputs": {
                "text_g": ["20", 0],
                "text_l": ["20", 0],
                "width": 4096,
                "height": 4096,
                "clip": ["4", 1],
            },
        }
        g["23"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["22", 0], "width": 64}}
        g["24"] = {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": ["23", 0], "conditioning_2": ["6", 0]},
        }
        g["3"]["inputs"]["positive"] = ["24", 0]
        g["3"]["inputs"]["seed"] = ["21", 0]
        # a hires pass downstream of the base sampler must not be reported
        g["30"] = {
            "class_type": "LatentUpscale",
            "inputs": {"samples": ["3", 0], "width": 2000, "height": 3000},
        }
        g["31"] = {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 9,
                "cfg": 3,
                "sampler_name": "dpmpp_2m",
                "scheduler": "normal",
                "denoise": 0.4,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["30", 0],
            },
        }
        g = dict(reversed(list(g.items())))  # graph order must not matter
        meta = parse_comfy(json.dumps(g))
        assert meta is not None
        assert meta.prompt == "castle on a hill\na red fox"
        assert meta.seed == 777 and meta.steps == 25 and (meta.width, meta.height) == (832, 1216)
        assert meta.params["comfyui_samplers"] == 2 and meta.params["comfyui_sampler_node"] == "3"
        assert meta.model == "base.safetensors"

    def test_sampler_custom_advanced_flux(self) -> None:
        g = {
            "1": {
                "class_type": "UNETLoader",
                "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "fp8"},
            },
            "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5", "clip_name2": "l"}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "neon city", "clip": ["2", 0]}},
            "4": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["3", 0]}},
            "5": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}},
            "6": {
                "class_type": "CFGGuider",
                "inputs": {"cfg": 1.0, "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0]},
            },
            "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": 31337}},
            "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "9": {
                "class_type": "BasicScheduler",
                "inputs": {"scheduler": "simple", "steps": 20, "denoise": 1.0, "model": ["1", 0]},
            },
            "10": {
                "class_type": "EmptySD3LatentImage",
                "inputs": {"width": 1024, "height": 576, "batch_size": 1},
            },
            "11": {
                "class_type": "SamplerCustomAdvanced",
                "inputs": {
                    "noise": ["7", 0],
                    "guider": ["6", 0],
                    "sampler": ["8", 0],
                    "sigmas": ["9", 0],
                    "latent_image": ["10", 0],
                },
            },
        }
        meta = parse_comfy(g)
        assert meta is not None
        assert meta.prompt == "neon city" and meta.negative_prompt == ""
        assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler) == (31337, 20, 1.0, "euler")
        assert meta.model == "flux1-dev.safetensors" and (meta.width, meta.height) == (1024, 576)
        assert meta.params["guidance"] == 3.5 and meta.params["scheduler"] == "simple"

    def test_string_concatenate_and_styler(self) -> None:
        g = comfy_basic_graph()
        g["40"] = {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": "a", "string_b": "b", "delimiter": ", "},
        }
        g["41"] = {
            "class_type": "SDXLPromptStyler",
            "inputs": {"text_positive": ["40", 0], "text_negative": "ugly"},
        }
        g["6"]["inputs"]["text"] = ["41", 0]
        g["7"]["inputs"]["text"] = ["41", 1]
        meta = parse_comfy(g)
        assert meta is not None and meta.prompt == "a, b" and meta.negative_prompt == "ugly"

    def test_img2img_has_no_generation_size(self) -> None:
        g = comfy_basic_graph()
        g["12"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"}}
        g["13"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["12", 0], "vae": ["4", 2]}}
        g["3"]["inputs"]["latent_image"] = ["13", 0]
        meta = parse_comfy(g)
        assert meta is not None and meta.width is None and meta.height is None

    def test_ui_workflow_only(self) -> None:
        wf = {
            "nodes": [
                {
                    "id": 1,
                    "type": "CheckpointLoaderSimple",
                    "widgets_values": ["wf_model.safetensors"],
                    "inputs": [],
                },
                {
                    "id": 2,
                    "type": "CLIPTextEncode",
                    "widgets_values": ["from the workflow"],
                    "inputs": [{"name": "clip", "link": 1}],
                },
                {
                    "id": 3,
                    "type": "CLIPTextEncode",
                    "widgets_values": ["bad"],
                    "inputs": [{"name": "clip", "link": 2}],
                },
                {"id": 4, "type": "EmptyLatentImage", "widgets_values": [512, 640, 1], "inputs": []},
                {
                    "id": 5,
                    "type": "KSampler",
                    "widgets_values": [42, "fixed", 12, 7, "euler", "normal", 1],
                    "inputs": [
                        {"name": "model", "link": 3},
                        {"name": "positive", "link": 4},
                        {"name": "negative", "link": 5},
                        {"name": "latent_image", "link": 6},
                    ],
                },
            ],
            "links": [
                [1, 1, 1, 2, 0, "CLIP"],
                [2, 1, 1, 3, 0, "CLIP"],
                [3, 1, 0, 5, 0, "MODEL"],
                [4, 2, 0, 5, 1, "CONDITIONING"],
                [5, 3, 0, 5, 2, "CONDITIONING"],
                [6, 4, 0, 5, 3, "LATENT"],
            ],
        }
        assert workflow_to_api(wf) is not None
        meta = extract_metadata(png_bytes([("tEXt", "workflow", json.dumps(wf))]))
        assert meta.generator == "comfyui" and meta.prompt == "from the workflow" and meta.negative_prompt == "bad"
        assert (meta.seed, meta.steps, meta.cfg_scale, meta.width, meta.height) == (42, 12, 7.0, 512, 640)
        assert meta.model == "wf_model.safetensors"

    def test_civitai_comfy_usercomment(self) -> None:
        g = comfy_basic_graph()
        g["extra"] = {"airs": ["urn:air:sdxl:checkpoint:civitai:1@2"]}
        g["extraMetadata"] = json.dumps({"prompt": "typed prompt", "negativePrompt": "typed neg", "steps": 25})
        t = tiff([], [(0x9286, 7, user_comment(json.dumps(g), "utf-16-be"))])
        meta = extract_metadata(jpeg_bytes(t))
        assert meta.generator == "civitai" and meta.prompt == "typed prompt" and meta.negative_prompt == "typed neg"
        assert meta.seed == 1234

    def test_cyclic_graph_terminates(self) -> None:
        g = comfy_basic_graph()
        g["6"] = {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["7", 0]},
        }
        g["7"] = {
            "class_type": "ConditioningConcat",
            "inputs": {"conditioning_to": ["6", 0], "conditioning_from": ["7", 0]},
        }
        meta = parse_comfy(g)
        assert meta is not None and meta.seed == 1234


# ------------------------------------------------------------------------------------ other formats
class TestOtherGenerators:
    def test_novelai_v4_png(self) -> None:
        comment = {
            "v4_prompt": {
                "caption": {
                    "base_caption": "2girls, park",
                    "char_captions": [{"char_caption": "girl, red hair", "centers": [{"x": 0.3, "y": 0.5}]}],
                }
            },
            "v4_negative_prompt": {"caption": {"base_caption": "lowres", "char_captions": []}},
            "steps": 28,
            "scale": 5.5,
            "seed": 12,
            "sampler": "k_euler",
            "width": 1024,
            "height": 1024,
        }
        data = png_bytes(
            [
                ("tEXt", "Title", "NovelAI generated image"),
                ("iTXt", "Description", "2girls, park"),
                ("tEXt", "Software", "NovelAI"),
                ("tEXt", "Source", "NovelAI Diffusion V4.5 C02D4F98"),
                ("tEXt", "Comment", json.dumps(comment)),
            ]
        )
        meta = extract_metadata(data)
        assert meta.generator == "novelai" and meta.prompt == "2girls, park" and meta.negative_prompt == "lowres"
        assert meta.params["character_prompts"] == ["girl, red hair"] and meta.cfg_scale == 5.5

    def test_novelai_legacy_prompt_only_in_description(self) -> None:
        data = png_bytes(
            [
                ("tEXt", "Description", "cat, space"),
                ("tEXt", "Software", "NovelAI"),
                ("tEXt", "Source", "SD 1D44365E"),
                (
                    "tEXt",
                    "Comment",
                    json.dumps(
                        {
                            "steps": 50,
                            "sampler": "k_euler_ancestral",
                            "seed": 2,
                            "scale": 10.0,
                            "uc": "lowres",
                            "strength": 0.4,
                        }
                    ),
                ),
            ]
        )
        meta = extract_metadata(data)
        assert meta.prompt == "cat, space" and meta.model == "SD 1D44365E" and meta.params["strength"] == 0.4

    def test_invokeai_dream(self) -> None:
        dream = '"a tree in fog [ugly, blurry]" -s 30 -S 123 -W 512 -H 640 -C 7.5 -A k_euler -U 2 0.5'
        meta = extract_metadata(png_bytes([("tEXt", "Dream", dream)]))
        assert (meta.prompt, meta.negative_prompt) == ("a tree in fog", "ugly, blurry")
        assert (meta.steps, meta.seed, meta.width, meta.height, meta.cfg_scale, meta.sampler) == (
            30,
            123,
            512,
            640,
            7.5,
            "k_euler",
        )

    def test_invokeai_sd_metadata(self) -> None:
        sdm = {
            "model_weights": "deliberate",
            "app_version": "2.3.0",
            "image": {
                "prompt": [{"prompt": "a tree [ugly]", "weight": 1}],
                "steps": 30,
                "cfg_scale": 7,
                "seed": 5,
                "sampler": "k_lms",
                "width": 512,
                "height": 512,
            },
        }
        meta = extract_metadata(png_bytes([("tEXt", "sd-metadata", json.dumps(sdm))]))
        assert (meta.prompt, meta.negative_prompt, meta.model) == ("a tree", "ugly", "deliberate")

    @pytest.mark.parametrize("model", [{"model_name": "juggernaut"}, {"name": "juggernaut", "hash": "blake3:x"}])
    def test_invokeai_metadata(self, model: dict[str, str]) -> None:
        md = {
            "positive_prompt": "p",
            "negative_prompt": "n",
            "seed": 1,
            "steps": 2,
            "cfg_scale": 3.0,
            "scheduler": "euler_a",
            "width": 64,
            "height": 32,
            "model": model,
        }
        meta = extract_metadata(png_bytes([("iTXt", "invokeai_metadata", json.dumps(md))]))
        assert (meta.prompt, meta.sampler, meta.model, meta.height) == ("p", "euler_a", "juggernaut", 32)

    def test_json_schemas_under_parameters(self) -> None:
        fooocus = {
            "prompt": "fish",
            "negative_prompt": "",
            "seed": "6952411511246973023",
            "steps": 30,
            "sampler": "dpmpp_2m_sde_gpu",
            "scheduler": "karras",
            "guidance_scale": 4,
            "base_model": "juggernautXL",
            "resolution": "(768, 1280)",
            "full_prompt": ["x"],
            "metadata_scheme": "fooocus",
        }
        meta = extract_metadata(png_bytes([("tEXt", "parameters", json.dumps(fooocus))]))
        assert meta.generator == "fooocus" and meta.seed == 6952411511246973023 and meta.width == 768
        ruined = {
            "Prompt": "p",
            "Negative": "n",
            "steps": 30,
            "cfg": 8,
            "width": 1024,
            "height": 1024,
            "seed": 2,
            "sampler_name": "dpmpp",
            "base_model_name": "m.safetensors",
            "software": "RuinedFooocus",
        }
        meta = extract_metadata(png_bytes([("tEXt", "parameters", json.dumps(ruined))]))
        assert meta.generator == "ruined-fooocus" and meta.model == "m.safetensors"
        hf = {
            "prompt": "p",
            "negative_prompt": "n",
            "resolution": "1024 x 768",
            "guidance_scale": 5.5,
            "num_inference_steps": 24,
            "seed": 4,
            "sampler": "DPM++ 2M Karras",
            "Model": "WAI",
        }
        meta = extract_metadata(png_bytes([("tEXt", "parameters", json.dumps(hf))]))
        assert meta.generator == "hf-space" and (meta.width, meta.height) == (1024, 768) and meta.model == "WAI"

    def test_tensorart_seed_from_graph(self) -> None:
        gen = {
            "prompt": "p",
            "negativePrompt": "n",
            "width": 512,
            "height": 512,
            "steps": 25,
            "cfgScale": 7,
            "seed": "-1",
            "baseModel": {"modelFileName": "WAI-16"},
            "ksamplerName": "euler_ancestral",
        }
        data = png_bytes(
            [
                ("tEXt", "generation_data", json.dumps(gen) + "\0"),
                ("tEXt", "prompt", json.dumps(comfy_basic_graph())),
            ]
        )
        meta = extract_metadata(data)
        assert meta.generator == "tensorart" and meta.seed == 1234 and meta.model == "WAI-16"

    def test_stability_matrix(self) -> None:
        pj = {
            "PositivePrompt": "p\r\n",
            "NegativePrompt": "n",
            "Steps": 20,
            "Sampler": "Euler",
            "CfgScale": 5,
            "Seed": 3,
            "Width": 1024,
            "Height": 512,
            "ModelName": "m.safetensors",
        }
        data = png_bytes(
            [
                ("tEXt", "parameters", "p\nSteps: 20, Sampler: Euler, Seed: 3"),
                ("tEXt", "parameters-json", json.dumps(pj)),
                ("tEXt", "smproj", "{}"),
            ]
        )
        meta = extract_metadata(data)
        assert meta.generator == "stability-matrix" and meta.prompt == "p" and meta.height == 512

    def test_drawthings_xmp(self) -> None:
        dt = json.dumps(
            {
                "c": "a lighthouse",
                "uc": "fog",
                "seed": 77,
                "steps": 8,
                "scale": 4.5,
                "sampler": "DPM++ 2M AYS",
                "model": "flux_1_schnell_q5p.ckpt",
                "size": "768x512",
                "strength": 1,
            }
        )
        xmp = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            "<xmp:CreatorTool>Draw Things</xmp:CreatorTool>"
            f'<exif:UserComment><rdf:Alt><rdf:li xml:lang="x-default">{_xml_escape(dt)}</rdf:li></rdf:Alt>'
            "</exif:UserComment>"
            '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">a lighthouse</rdf:li></rdf:Alt>'
            "</dc:description>"
            "</rdf:Description></rdf:RDF></x:xmpmeta>"
        )
        meta = extract_metadata(png_bytes([("iTXt", "XML:com.adobe.xmp", xmp)]))
        assert meta.generator == "drawthings" and meta.metadata_source == "xmp"
        assert (meta.prompt, meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale) == (
            "a lighthouse",
            "fog",
            77,
            8,
            4.5,
        )
        assert (meta.width, meta.height, meta.model) == (768, 512, "flux_1_schnell_q5p.ckpt")
        assert parse_xmp(xmp)["xmp:CreatorTool"] == "Draw Things"
        # the same packet in a JPEG APP1
        assert extract_metadata(jpeg_bytes(xmp=xmp.encode())).generator == "drawthings"

    def test_easydiffusion_png_fields(self) -> None:
        data = png_bytes(
            [
                ("tEXt", "prompt", "a boat"),
                ("tEXt", "negative_prompt", "rain"),
                ("tEXt", "seed", "42"),
                ("tEXt", "use_stable_diffusion_model", "sd-v1-4"),
                ("tEXt", "sampler_name", "euler_a"),
                ("tEXt", "num_inference_steps", "25"),
                ("tEXt", "guidance_scale", "7.5"),
                ("tEXt", "width", "512"),
                ("tEXt", "height", "768"),
            ]
        )
        meta = extract_metadata(data)
        assert meta.generator == "easydiffusion" and meta.prompt == "a boat" and meta.seed == 42
        assert (meta.steps, meta.cfg_scale, meta.model, meta.width, meta.height) == (
            25,
            7.5,
            "sd-v1-4",
            512,
            768,
        )

    def test_easydiffusion_exif_json(self) -> None:
        payload = json.dumps(
            {
                "Prompt": "a boat",
                "Negative Prompt": "rain",
                "Seed": 42,
                "Stable Diffusion model": "sd-v1-4",
                "Sampler": "euler_a",
                "Steps": 25,
                "Guidance Scale": 7.5,
                "Width": 512,
                "Height": 768,
            }
        )
        meta = extract_metadata(jpeg_bytes(tiff([], [(0x9286, 7, user_comment(payload, "utf-16-le"))])))
        assert meta.generator == "easydiffusion" and meta.negative_prompt == "rain" and meta.steps == 25

    def test_fooocus_jpeg_comment(self) -> None:
        fooocus = {
            "prompt": "fish",
            "negative_prompt": "",
            "seed": "5",
            "steps": 30,
            "sampler": "dpmpp",
            "guidance_scale": 4,
            "base_model": "jxl",
            "resolution": "(768, 1280)",
            "full_prompt": ["x"],
        }
        meta = extract_metadata(jpeg_bytes(comment=json.dumps(fooocus).encode()))
        assert meta.generator == "fooocus" and meta.metadata_source == "jpeg:com"


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


# -------------------------------------------------------------------------------- negatives / errors
class TestNegativesAndErrors:
    def test_lookalike_fields_find_nothing(self) -> None:
        for data in (
            png_bytes([("iTXt", "Comment", "Resaved in GIMP"), ("tEXt", "Software", "GIMP")]),
            png_bytes([("tEXt", "Description", "holiday photo"), ("tEXt", "prompt", "not json")]),
            jpeg_bytes(comment=b"Created with GIMP"),
            webp_bytes(tiff([(0x010E, 2, b"GIMP\xe3\x81\xa7\0"), (0x0131, 2, b"GIMP 3.0.6\0")])),
            jpeg_bytes(tiff([(0x010F, 2, b"Canon\0"), (0x0110, 2, b"EOS R5\0")], [(0x9286, 7, b"ASCII\0\0\0hello")])),
        ):
            meta = extract_metadata(data)
            assert not meta.found() and meta.prompt is None and meta.error in (None, "bad_text")

    def test_empty_and_unsupported(self) -> None:
        assert extract_metadata(b"").error == "empty"
        meta = extract_metadata(b"GIF89a" + b"\0" * 20)
        assert meta.image_format == "GIF" and not meta.found() and meta.error is None
        assert extract_metadata(b"hello world").error == "unsupported_format"

    def test_jpeg_named_png(self) -> None:
        t = tiff([], [(0x9286, 7, user_comment(INFOTEXT, "utf-16-be"))])
        meta = extract_metadata(jpeg_bytes(t), filename="image.png")
        assert meta.image_format == "JPEG"
        check_infotext(meta)

    def test_truncated_png(self) -> None:
        data = png_bytes([("tEXt", "Software", "x")], size=(64, 64))
        meta = extract_metadata(data[:60])
        assert not meta.found() and meta.error == "truncated"

    def test_too_large_input(self) -> None:
        meta = extract_metadata(png_bytes(), limits=Limits(max_input_bytes=10))
        assert meta.error == "too_large" and meta.image_format == "PNG"

    def test_big_text_chunk_skipped(self) -> None:
        data = png_bytes([("tEXt", "parameters", "x" * 5000)])
        meta = extract_metadata(data, limits=Limits(max_text_bytes=1000))
        assert not meta.found() and meta.error == "too_large"

    def test_metadata_error_kind(self) -> None:
        assert MetadataError("truncated").kind == "truncated"
        assert MetadataError("whatever").kind == "corrupt"

    def test_to_dict_and_found(self) -> None:
        meta = ImageMetadata(prompt="x", metadata_source="png:parameters")
        d = meta.to_dict()
        assert meta.found() and d["prompt"] == "x" and d["params"] == {} and "error" in d
        assert not ImageMetadata().found()


# --------------------------------------------------------------------------------- more generality
class TestMoreGenerality:
    def test_stealth_rgb_source_token(self) -> None:
        im = stealth_image(INFOTEXT, size=(60, 50), mode="rgb")
        assert extract_metadata(save_png(im.convert("RGB"))).metadata_source == "stealth-rgb"

    def test_invokeai_several_bracket_groups(self) -> None:
        dream = '"a [ugly] tree in [blurry] fog" -s 30 -S 1 -W 64 -H 64 -C 7 -A k_lms'
        meta = extract_metadata(png_bytes([("tEXt", "Dream", dream)]))
        assert (meta.prompt, meta.negative_prompt) == ("a tree in fog", "ugly, blurry")

    def test_exif_in_other_containers(self) -> None:
        t = tiff([], [(0x9286, 7, user_comment(INFOTEXT, "utf-16-be"))])
        avif = struct.pack(">I", 24) + b"ftypavif" + b"\0" * 12 + b"....meta" + b"\0\0\0\x06Exif\0\0" + t
        meta = extract_metadata(avif)
        assert meta.image_format == "AVIF"
        check_infotext(meta)
        tif = extract_metadata(t)
        assert tif.image_format == "TIFF"
        check_infotext(tif)

    def test_truncated_jpeg_and_webp_without_metadata(self) -> None:
        jpg = jpeg_bytes()
        meta = extract_metadata(jpg[: len(jpg) // 2])
        assert not meta.found() and meta.error == "truncated"
        webp = webp_bytes()
        meta = extract_metadata(webp[: len(webp) - 10])
        assert not meta.found() and meta.error == "truncated"
        assert extract_metadata(jpg).error is None

    def test_efficiency_nodes(self) -> None:
        g = {
            "1": {
                "class_type": "Efficient Loader",
                "inputs": {
                    "ckpt_name": "eff.safetensors",
                    "positive": "eff positive",
                    "negative": "eff negative",
                    "empty_latent_width": 640,
                    "empty_latent_height": 960,
                    "batch_size": 1,
                },
            },
            "2": {
                "class_type": "KSampler (Efficient)",
                "inputs": {
                    "seed": 5,
                    "steps": 22,
                    "cfg": 6,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "model": ["1", 0],
                    "positive": ["1", 1],
                    "negative": ["1", 2],
                    "latent_image": ["1", 3],
                },
            },
        }
        meta = parse_comfy(g)
        assert meta is not None
        assert (meta.prompt, meta.negative_prompt, meta.model) == (
            "eff positive",
            "eff negative",
            "eff.safetensors",
        )
        assert (meta.width, meta.height, meta.steps) == (640, 960, 22)

    def test_wildcard_encode_uses_populated_text(self) -> None:
        g = comfy_basic_graph()
        g["6"] = {
            "class_type": "ImpactWildcardEncode",
            "inputs": {"wildcard_text": "a __animal__", "populated_text": "a fox", "clip": ["4", 1]},
        }
        meta = parse_comfy(g)
        assert meta is not None and meta.prompt == "a fox"

    def test_controlnet_apply_advanced_passes_roles(self) -> None:
        g = comfy_basic_graph()
        g["50"] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {"positive": ["6", 0], "negative": ["7", 0], "strength": 1, "control_net": ["51", 0]},
        }
        g["51"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}}
        g["3"]["inputs"]["positive"] = ["50", 0]
        g["3"]["inputs"]["negative"] = ["50", 1]
        meta = parse_comfy(g)
        assert meta is not None and (meta.prompt, meta.negative_prompt) == ("a red fox", "blurry")


def test_invokeai_graph_only() -> None:
    graph = {
        "id": "g",
        "nodes": {
            "loader": {
                "id": "loader",
                "type": "main_model_loader",
                "model": {"name": "dreamshaper_8", "base": "sd-1"},
            },
            "lora": {"id": "lora", "type": "lora_loader", "lora": {"name": "x"}},
            "pos_str": {"id": "pos_str", "type": "string", "value": "a lighthouse at dusk"},
            "pos": {"id": "pos", "type": "compel", "prompt": ""},
            "neg": {"id": "neg", "type": "compel", "prompt": "blurry"},
            "seed": {"id": "seed", "type": "integer", "value": 987},
            "noise": {"id": "noise", "type": "noise", "seed": 0, "width": 768, "height": 512},
            "den": {
                "id": "den",
                "type": "denoise_latents",
                "steps": 30,
                "cfg_scale": 7.5,
                "scheduler": "dpmpp_2m",
                "denoising_start": 0,
            },
            "hires": {
                "id": "hires",
                "type": "denoise_latents",
                "steps": 10,
                "cfg_scale": 3,
                "scheduler": "euler",
                "denoising_start": 0.6,
            },
        },
        "edges": [
            {
                "source": {"node_id": "loader", "field": "unet"},
                "destination": {"node_id": "lora", "field": "unet"},
            },
            {
                "source": {"node_id": "lora", "field": "unet"},
                "destination": {"node_id": "den", "field": "unet"},
            },
            {
                "source": {"node_id": "pos_str", "field": "value"},
                "destination": {"node_id": "pos", "field": "prompt"},
            },
            {
                "source": {"node_id": "pos", "field": "conditioning"},
                "destination": {"node_id": "den", "field": "positive_conditioning"},
            },
            {
                "source": {"node_id": "neg", "field": "conditioning"},
                "destination": {"node_id": "den", "field": "negative_conditioning"},
            },
            {
                "source": {"node_id": "seed", "field": "value"},
                "destination": {"node_id": "noise", "field": "seed"},
            },
            {
                "source": {"node_id": "noise", "field": "noise"},
                "destination": {"node_id": "den", "field": "noise"},
            },
        ],
    }
    meta = extract_metadata(png_bytes([("iTXt", "invokeai_graph", json.dumps(graph))]))
    assert meta.metadata_source == "png:invokeai_graph" and meta.generator == "invokeai"
    assert (meta.prompt, meta.negative_prompt, meta.seed, meta.steps) == (
        "a lighthouse at dusk",
        "blurry",
        987,
        30,
    )
    assert (meta.cfg_scale, meta.sampler, meta.width, meta.height) == (7.5, "dpmpp_2m", 768, 512)
    assert meta.model == "dreamshaper_8"


def test_infotext_in_xpcomment() -> None:
    t = tiff([(0x9C9C, 1, INFOTEXT.encode("utf-16-le") + b"\0\0")])
    meta = extract_metadata(jpeg_bytes(t))
    check_infotext(meta)
    assert meta.metadata_source == "exif:ifd0"


def test_civitai_a1111_mode_model_from_resources() -> None:
    text = (
        "a castle\nNegative prompt: fog\nSteps: 25, Sampler: Euler a, CFG scale: 5, Seed: 1, "
        "Size: 1024x1024, "
        'Civitai resources: [{"type":"lora","modelName":"detail"},{"type":"checkpoint","modelVersionId":2,'
        '"modelName":"WAI-illustrious-SDXL","modelVersionName":"v16.0"}], Civitai metadata: {}'
    )
    t = tiff([(0x013B, 2, b"ai\0")], [(0x9286, 7, user_comment(text, "utf-16-be"))])
    meta = extract_metadata(jpeg_bytes(t))
    assert meta.generator == "civitai" and meta.model == "WAI-illustrious-SDXL"
    assert meta.params["Civitai resources"][1]["modelVersionId"] == 2


def test_comfy_size_from_single_empty_latent_when_chain_unknown() -> None:
    g = comfy_basic_graph()
    g["60"] = {"class_type": "SomeCustomLatentNode", "inputs": {"strength": 1}}
    g["3"]["inputs"]["latent_image"] = ["60", 0]
    meta = parse_comfy(g)
    assert meta is not None and (meta.width, meta.height) == (832, 1216)


def test_civitai_bad_extra_metadata_still_uses_graph() -> None:
    g = comfy_basic_graph()
    g["extraMetadata"] = '{"prompt": "broken'
    t = tiff([], [(0x9286, 7, user_comment(json.dumps(g), "utf-16-be"))])
    meta = extract_metadata(jpeg_bytes(t))
    assert meta.generator == "civitai" and meta.prompt == "a red fox" and meta.error is None


def test_stability_matrix_infotext_only() -> None:
    data = png_bytes(
        [
            ("tEXt", "parameters", "p\r\nNegative prompt: n\r\nSteps: 20, Sampler: Euler, Seed: 3"),
            ("tEXt", "smproj", "{}"),
            ("tEXt", "prompt", json.dumps(comfy_basic_graph())),
        ]
    )
    meta = extract_metadata(data)
    assert meta.generator == "stability-matrix" and meta.metadata_source == "png:parameters"
    assert (meta.prompt, meta.negative_prompt, meta.seed) == ("p", "n", 3)


def test_comfy_pysssss_loader_dict_name() -> None:
    g = comfy_basic_graph()
    g["4"] = {
        "class_type": "CheckpointLoader|pysssss",
        "inputs": {"ckpt_name": {"content": "sdxl/juggernaut.safetensors", "image": None}},
    }
    meta = parse_comfy(g)
    assert meta is not None and meta.model == "sdxl/juggernaut.safetensors"


def test_usercomment_unicode_header_with_utf8_body() -> None:
    t = tiff([], [(0x9286, 7, b"UNICODE\0" + INFOTEXT.encode("utf-8"))])
    check_infotext(extract_metadata(jpeg_bytes(t)))
