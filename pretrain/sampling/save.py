"""Sample files: PNG grids and ``samples.npz`` (format: docs/sampling.md), written atomically.

``write_outputs`` writes one output directory of `srdd sample` / `srdd edit`: ``grid.png`` (all
images, one row per class), ``class_<c>.png`` (one grid per class), ``samples.npz`` (``images``
uint8 N x H x W x 3, ``labels`` int64 N, ``pyramid_s<k>`` N x pn_k^2 per scale, ``patch_nums``),
``meta.json`` (sampler settings, refinement cost, checkpoint) and ``config.yaml``.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pretrain.config import SRDDConfig
from pretrain.outputs import atomic_path, atomic_write_bytes, atomic_write_json, save_config


def to_uint8(img_B3HW: torch.Tensor) -> np.ndarray:
    """[-1, 1] images -> uint8 N x H x W x 3."""
    x = ((img_B3HW.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(images_NHW3: np.ndarray, ncol: int, pad: int = 2) -> np.ndarray:
    """Tile images row-major into one picture with ``pad`` pixels of white between them."""
    N, H, W, _ = images_NHW3.shape
    nrow = max(1, math.ceil(N / ncol))
    out = np.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images_NHW3):
        r, c = divmod(i, ncol)
        out[pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = im
    return out


def write_png(path: Path, array_HW3: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array_HW3).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_outputs(cfg: SRDDConfig, out_dir: str | Path, img_B3HW: torch.Tensor, label_B: torch.Tensor,
                  pyramid: Sequence[torch.Tensor], meta: dict[str, Any], extra: dict[str, torch.Tensor] | None = None
                  ) -> Path:
    """PNG grids (all, and one per class) + samples.npz + meta.json + config.yaml in ``out_dir``."""
    out = Path(out_dir)
    images = to_uint8(img_B3HW)
    labels = label_B.cpu().numpy().astype(np.int64)
    per_class = {int(c): images[labels == c] for c in np.unique(labels)}
    ncol = max(len(v) for v in per_class.values())
    rows = [np.concatenate([v, np.full((ncol - len(v), *v.shape[1:]), 255, np.uint8)]) for v in per_class.values()]
    write_png(out / "grid.png", grid(np.concatenate(rows), ncol))
    for c, v in per_class.items():
        write_png(out / f"class_{c}.png", grid(v, math.ceil(math.sqrt(len(v)))))
    arrays = {"images": images, "labels": labels,
              "patch_nums": np.array([int(math.isqrt(p.shape[1])) for p in pyramid], np.int64),
              # code indices as int64; a continuous-codes run's pyramid holds float values
              **{f"pyramid_s{k}": p.cpu().numpy().astype(np.float32 if p.is_floating_point() else np.int64)
                 for k, p in enumerate(pyramid)}}
    for name, t in (extra or {}).items():
        arrays[name] = to_uint8(t) if t.is_floating_point() and t.ndim == 4 else t.cpu().numpy()
    with atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write_json(out / "meta.json", meta)
    save_config(cfg, out)
    return out
