"""The pictures of the sandbox catalog: drawing and encoding, pure functions of their inputs."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo


def draw_picture(d: bytes, width: int, height: int) -> Image.Image:
    """A ``width`` x ``height`` RGB picture drawn from the bytes ``d``: gradient + shapes + low-frequency noise."""
    rng = random.Random(d)
    w, h = width, height
    # background: linear gradient between two random colours in a random direction
    c0 = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    c1 = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    proj = (xx / max(w - 1, 1) - 0.5) * np.cos(angle) + (yy / max(h - 1, 1) - 0.5) * np.sin(angle)
    proj = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    arr = c0[None, None, :] * (1 - proj[..., None]) + c1[None, None, :] * proj[..., None]
    # low-frequency noise (an 8x8 grid upscaled) so that pictures differ in texture too
    nrng = np.random.default_rng(int.from_bytes(d[:8], "big"))
    noise = nrng.integers(-40, 41, size=(8, 8, 3)).astype(np.int16)
    noise_img = Image.fromarray((noise + 128).astype(np.uint8), "RGB").resize((w, h), Image.Resampling.BICUBIC)
    arr = arr + np.asarray(noise_img, dtype=np.float32) - 128
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 7)):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        x0, x1 = sorted(rng.uniform(-0.2, 1.2) * w for _ in range(2))
        y0, y1 = sorted(rng.uniform(-0.2, 1.2) * h for _ in range(2))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1 + 4, y1 + 4), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1 + 4, y1 + 4), fill=colour)
        else:
            pts = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(pts, fill=colour)
    return img


def encode_picture(img: Image.Image, fmt: str, infotext: str | None, *, jpeg_quality: int = 90) -> bytes:
    """``img`` as ``fmt`` (PNG, JPEG or WEBP) bytes, with ``infotext`` as A1111 embeds it (or none)."""
    buf = io.BytesIO()
    if fmt == "PNG":
        pnginfo = None
        if infotext is not None:
            pnginfo = PngInfo()
            try:
                pnginfo.add_text("parameters", infotext)  # tEXt, or iTXt when not latin-1 (as A1111)
            except UnicodeEncodeError:  # a lone surrogate (--overrides): the bytes a broken writer leaves
                raw = infotext.encode("utf-8", "surrogatepass")
                pnginfo.add(b"iTXt", b"parameters\0\0\0\0\0" + raw)
        img.save(buf, "PNG", pnginfo=pnginfo, optimize=False, compress_level=6)
    else:
        kwargs: dict[str, object] = {}
        if infotext is not None:
            exif = Image.Exif()
            exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + infotext.encode("utf-16-be", "surrogatepass")
            kwargs["exif"] = exif.tobytes()
        if fmt == "JPEG":
            img.save(buf, "JPEG", quality=jpeg_quality, **kwargs)
        else:
            img.save(buf, "WEBP", quality=80, method=4, **kwargs)
    return buf.getvalue()
