"""`srdd sample --ckpt RUN --classes 0,1,2 --n 16`: image grids and token pyramids from a run.

Outputs under ``<run>/samples/<tag>/`` (tag = ``seed<seed>-<refine>`` unless ``--out``):
``grid.png`` (all images, one row per class), ``class_<c>.png`` (one grid per class),
``samples.npz`` (``images`` uint8 N x H x W x 3, ``labels`` int64 N, ``pyramid_s<k>`` int64
N x pn_k^2 per scale, ``patch_nums``), ``meta.json`` (sampler settings, refinement cost,
checkpoint) and ``config.yaml`` (the resolved config). Everything is written atomically.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_path, atomic_write_bytes, atomic_write_json, save_config

log = logging.getLogger("srdd.sample")


# ---- loading ------------------------------------------------------------------------------
def resolve_run(ckpt: str) -> Path:
    """``--ckpt`` is a run directory, a run name under SRDD_HOME, or a model.pt file."""
    for cand in (Path(ckpt), home_dir() / ckpt):
        if cand.is_file():
            return cand.parent
        if (cand / "model.pt").is_file():
            return cand
    raise ConfigError(f"--ckpt {ckpt}: no model.pt in {ckpt} or {home_dir() / ckpt}")


def sampler_for(run_cfg: SRDDConfig, run: Path, any_cell: bool = False) -> Any:
    """What a trained run samples with: its VQ-VAE tokenizer for VAR's pyramid cell, else its
    ``pyramid.*`` ablation cell's codec, which only callers needing no VQ code indices accept
    (``any_cell``: `srdd sample`, `srdd eval`)."""
    from pretrain.pyramid.codec import load_codec
    from pretrain.config.pyramid import VAR_CELL
    from pretrain.tokenizer import default_tokenizer_path, load_tokenizer

    p = run_cfg.pyramid
    if (p.space, p.codes, p.bands) == VAR_CELL:
        return load_tokenizer(default_tokenizer_path(run_cfg))
    if not any_cell:
        raise ConfigError(f"{run} is a pyramid.* ablation run ({p.cell}); this stage needs VQ code indices "
                          "(pyramid.space=latent codes=discrete bands=residual)")
    return load_codec(run_cfg)


def load_for_sampling(ckpt: str, any_cell: bool = False) -> tuple[Any, Any, Path, SRDDConfig]:
    """(model in eval mode, its run's tokenizer or codec (see ``sampler_for``), the run directory,
    the config the model was saved with) from a trained run's model.pt."""
    from pretrain.train.export import load_model

    run = resolve_run(ckpt)
    model, run_cfg, _ = load_model(run / "model.pt")
    return model, sampler_for(run_cfg, run, any_cell), run, run_cfg


def class_labels(classes: Sequence[int], n: int, num_classes: int) -> torch.Tensor:
    """n labels cycling over ``classes`` (all classes when empty), sorted so rows group by class."""
    pool = list(classes) or list(range(num_classes))
    bad = [c for c in pool if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"sample.classes={list(classes)}: {bad} outside [0, {num_classes})")
    return torch.tensor(sorted(pool[i % len(pool)] for i in range(n)), dtype=torch.long)


def source_images(cfg: SRDDConfig, vae: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n validation images (and labels) of the run's image shards, for editing."""
    from data_pipeline.image_loader import image_loader

    imgs, labels = [], []
    for img, label in image_loader(cfg, split="val", batch_size=n, infinite=False):
        imgs.append(img), labels.append(label)
        if sum(len(x) for x in labels) >= n:
            break
    if not imgs:
        raise ConfigError("no validation images in the image shards (data.shards_dir); run `srdd shards` first")
    return torch.cat(imgs)[:n], torch.cat(labels)[:n]


# ---- writing ------------------------------------------------------------------------------
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


# ---- the stage ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="RUN", help="run directory (or run name under SRDD_HOME) holding model.pt")
    parser.add_argument("--classes", default=None, help="comma-separated labels (overrides sample.classes)")
    parser.add_argument("--n", type=int, default=None, help="number of images (overrides sample.n)")
    parser.add_argument("--out", default=None, help="output directory (default <run>/samples/seed<seed>-<refine>)")


def parse_classes(text: str | None, default: Sequence[int]) -> list[int]:
    if text is None:
        return list(default)
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--classes {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.sampling import sample_in_batches
    from pretrain.sampling.refine import RefineCost

    from pretrain.pyramid.codec import check_sampling

    s = cfg.sample
    model, vae, run, run_cfg = load_for_sampling(args.ckpt, any_cell=True)
    check_sampling(argparse.Namespace(pyramid=run_cfg.pyramid, sample=s))  # the run's cell, this call's sampler
    labels = class_labels(parse_classes(args.classes, s.classes), args.n or s.n, model.num_classes)
    cost = RefineCost()
    with torch.no_grad():
        images, pyramids = zip(*sample_in_batches(model, vae, labels, s, cost))
    pyramid = [torch.cat(p) for p in zip(*pyramids)]
    out = Path(args.out) if args.out else run / "samples" / f"seed{s.seed}-{s.refine}"
    meta = {"ckpt": str(run / "model.pt"), "n": len(labels), "classes": sorted(set(labels.tolist())),
            "sampler": {k: getattr(s, k) for k in ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "seed",
                                                    "refine", "refine_rounds", "p_resample", "refine_scales")},
            "refine_cost": cost.as_dict()}
    write_outputs(cfg, out, torch.cat(images), labels, pyramid, json.loads(json.dumps(meta, default=list)))
    log.info("wrote %d samples to %s", len(labels), out)
    print(out)
    return 0
