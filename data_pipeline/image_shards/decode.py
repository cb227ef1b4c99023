"""Image decoding and VAR's preprocessing.

VAR (utils/data.py): resize the shorter side to ``round(mid_reso * final_reso)`` with
Lanczos, then a ``final_reso`` square crop: random for train (augmentation), centre for val;
pixels map to [-1, 1] as ``x / 127.5 - 1``. Crops here are explicit offsets so the choice
made for a sample can be stored next to its pyramid.
"""
from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "ppm")


class BadInput(ValueError):
    """An input that is skipped and counted; ``reason`` is its category in the manifests."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def decode_image(data: bytes) -> tuple[Image.Image, str]:
    """Bytes -> (RGB image, original mode). Grey, RGBA, palette, CMYK... are converted to RGB
    (RGBA is composited on black, which is what dropping alpha does in PIL)."""
    if not data:
        raise BadInput("empty file")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError as e:
        raise BadInput("corrupt image", str(e)[:120]) from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated image" if "truncated" in str(e).lower() else "corrupt image"
        raise BadInput(reason, str(e)[:120]) from None
    mode = img.mode
    return (img if mode == "RGB" else img.convert("RGB")), mode


def encode_image(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    else:
        img.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def resize_shorter(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) == side:
        return img
    scale = side / min(w, h)
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.LANCZOS)


def crop_offset(size: tuple[int, int], reso: int, random_crop: bool, seed: int, key: str) -> tuple[int, int]:
    """Top-left corner of the crop: centred, or drawn from (seed, key) so it is reproducible."""
    w, h = size
    if not random_crop:
        return (w - reso) // 2, (h - reso) // 2
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return int(rng.integers(0, w - reso + 1)), int(rng.integers(0, h - reso + 1))


def preprocess(img: Image.Image, reso: int, mid_reso: float, random_crop: bool = False, seed: int = 0,
               key: str = "") -> tuple[np.ndarray, tuple[int, int]]:
    """RGB image -> (uint8 HxWx3 array of side ``reso``, crop offset (x, y))."""
    img = resize_shorter(img, max(reso, round(mid_reso * reso)))
    x, y = crop_offset(img.size, reso, random_crop, seed, key)
    return np.asarray(img.crop((x, y, x + reso, y + reso)), dtype=np.uint8), (x, y)


def to_pm1(arr_BHW3: np.ndarray):
    """uint8 B x H x W x 3 -> float32 tensor B x 3 x H x W in [-1, 1]."""
    import torch

    return torch.from_numpy(arr_BHW3).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
