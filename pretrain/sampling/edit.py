"""Zero-shot editing by clamping known tokens (`srdd edit --task inpaint|outpaint|superres`).

SRDD (arXiv 2509.22636) edits without training, as diffusion inpainting does: the known part
of the image is tokenised over the same scale schedule, and at every scale the sampler's
draw is overwritten by the known tokens before it enters f_hat, so every later scale is
conditioned on them. A pixel mask maps to scale k's pn x pn grid by cells: a token is known
only when its whole cell lies inside the known region (an adaptive max-pool of the unknown
mask), so a coarse token that straddles the edit region is always generated.

What is tokenised is only what is known (docs/sampling.md, "The leak the first version had"):
the hidden pixels are replaced by the mean of the image's known pixels (per channel) before
encoding, so no token - through the encoder's receptive field or a coarse scale's pooling -
carries information about the hidden region; the edit reconstructs it, never copies it.

- inpaint: the box ``sample.edit_box`` (or any per-image known mask) is regenerated, the rest is known.
- outpaint: only the box is known; everything outside it is generated.
- superres: the low-resolution image (side / ``sample.superres_factor``) is upsampled and
  tokenised; the coarse scales it can determine (pn <= final side / factor) are fixed
  entirely and the fine scales are sampled.

The clamp is the sampler's ``constrain`` hook (pretrain/sampling/sampler.py): it applies to every
draw, before and after refinement, and to a restart's re-quantised prefix, so known tokens come
back exactly whatever ``sample.refine`` does.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError

log = logging.getLogger("srdd.edit")
TASKS = ("inpaint", "outpaint", "superres")


def box_mask(side: int, box: Sequence[float], B: int = 1) -> torch.Tensor:
    """Pixel mask (B, 1, side, side), True inside the box x0,y0,x1,y1 (image fractions)."""
    x0, y0, x1, y1 = (round(v * side) for v in box)
    m = torch.zeros(B, 1, side, side, dtype=torch.bool)
    m[:, :, y0:y1, x0:x1] = True
    return m


def mask_to_grid(known_B1HW: torch.Tensor, pn: int) -> torch.Tensor:
    """Known-token mask (B, pn*pn) at a pn x pn grid: a cell is known iff no pixel in it is unknown."""
    unknown = F.adaptive_max_pool2d((~known_B1HW).float(), pn)
    return (unknown == 0).flatten(1)


@dataclass
class KnownTokens:
    """Tokens to clamp per scale: ``idx`` (B, pn^2) and ``mask`` (B, pn^2) True where known."""

    idx: list[torch.Tensor]
    mask: list[torch.Tensor]

    def __call__(self, k: int, idx_Bl: torch.Tensor, rows_B: torch.Tensor) -> torch.Tensor:
        """The clamp: known positions of rows ``rows_B`` get the known code, the rest keep ``idx_Bl``."""
        rows_B = rows_B.to(self.mask[k].device)
        return torch.where(self.mask[k][rows_B].to(idx_Bl.device), self.idx[k][rows_B].to(idx_Bl.device), idx_Bl)


def known_pixels(task: str, side: int, B: int, box: Sequence[float]) -> torch.Tensor:
    """(B, 1, side, side) True where ``task`` keeps the image: outside the box (inpaint) or inside it (outpaint)."""
    if task not in ("inpaint", "outpaint"):
        raise ValueError(f"task={task!r}: known pixels are a box's inside or outside (inpaint | outpaint)")
    inside = box_mask(side, box, B)
    return ~inside if task == "inpaint" else inside


def neutral_fill(img_B3HW: torch.Tensor, known_B1HW: torch.Tensor) -> torch.Tensor:
    """The image with every hidden pixel set to the mean of its known pixels (per image and channel):
    a value that says nothing about the hidden region (mid-grey when nothing is known)."""
    w = known_B1HW.to(img_B3HW.dtype)
    mean_B311 = (img_B3HW * w).sum((2, 3), keepdim=True) / w.sum((2, 3), keepdim=True).clamp_min(1)
    return torch.where(known_B1HW, img_B3HW, mean_B311)


def superres_source(img_B3HW: torch.Tensor, factor: int) -> torch.Tensor:
    """What super-resolution knows: the image at side / factor (area), bicubically upsampled back."""
    H = img_B3HW.shape[-1]
    low = F.interpolate(img_B3HW, scale_factor=1 / factor, mode="area")
    return F.interpolate(low, size=(H, H), mode="bicubic", align_corners=False).clamp(-1, 1)


def known_tokens(vae: Any, img_B3HW: torch.Tensor, task: str, patch_nums: Sequence[int],
                 box: Sequence[float] = (0.25, 0.25, 0.75, 0.75), factor: int = 2,
                 known_B1HW: torch.Tensor | None = None) -> KnownTokens:
    """Tokenise what is known of ``img_B3HW`` for ``task`` and the per-scale masks. ``known_B1HW``
    (inpaint/outpaint) replaces the box: any per-image mask of known pixels."""
    B, _, H, _ = img_B3HW.shape
    if task == "superres":
        idx = vae.encode_pyramid(superres_source(img_B3HW, factor), patch_nums)
        limit = patch_nums[-1] // factor
        mask = [torch.full((B, pn * pn), pn <= limit) for pn in patch_nums]
        return KnownTokens(idx, mask)
    if task not in ("inpaint", "outpaint"):
        raise ValueError(f"task={task!r}: choose one of {TASKS}")
    known = known_pixels(task, H, B, box) if known_B1HW is None else known_B1HW.bool()
    idx = vae.encode_pyramid(neutral_fill(img_B3HW, known), patch_nums)
    return KnownTokens(idx, [mask_to_grid(known, pn) for pn in patch_nums])


def edit(model: Any, vae: Any, img_B3HW: torch.Tensor, label_B: torch.Tensor, task: str,
         sample_cfg: Any, refinement: Any = None, known_B1HW: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, list[torch.Tensor], KnownTokens]:
    """Run one zero-shot edit with ``refinement`` (a ``build_refiner`` result, or None); returns
    (edited images, their token pyramid, the clamped tokens). ``known_B1HW``: per-image known
    pixels for inpaint/outpaint instead of ``sample.edit_box``."""
    from pretrain.sampling.sampler import sample

    patch_nums = tuple(sample_cfg.schedule) or tuple(model.patch_nums)
    known = known_tokens(vae, img_B3HW, task, patch_nums, sample_cfg.edit_box, sample_cfg.superres_factor, known_B1HW)
    stats: dict[str, Any] = {}
    img, pyramid = sample(model, vae, label_B, cfg=sample_cfg.cfg, top_k=sample_cfg.top_k, top_p=sample_cfg.top_p,
                          seed=sample_cfg.seed, schedule=list(patch_nums),
                          refine=refinement.hook if refinement else None,
                          restart=refinement.restart if refinement else None, constrain=known,
                          temperature=sample_cfg.temperature, cfg_schedule=sample_cfg.cfg_schedule,
                          return_pyramid=True, stats=stats)
    if refinement:
        refinement.cost.add_stats(stats)
    return img, pyramid, known


def source_images(cfg: SRDDConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n validation images (and labels) of the run's image shards: what gets edited."""
    from data_pipeline.image_shards.loader import image_loader

    imgs, labels = [], []
    for img, label in image_loader(cfg, split="val", batch_size=n, infinite=False):
        imgs.append(img), labels.append(label)
        if sum(len(x) for x in labels) >= n:
            break
    if not imgs:
        raise ConfigError("no validation images in the image shards (data.shards_dir); run `srdd shards` first")
    return torch.cat(imgs)[:n], torch.cat(labels)[:n]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--ckpt", required=True, metavar="RUN", help="run directory (or run name under SRDD_HOME) holding model.pt")
    parser.add_argument("--n", type=int, default=None, help="images to edit (default sample.n)")
    parser.add_argument("--out", default=None, help="output directory (default <run>/edits/<task>)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.sampling.batches import build_refiner
    from pretrain.sampling.load import load_for_sampling
    from pretrain.sampling.save import write_outputs

    model, vae, run, _ = load_for_sampling(args.ckpt)
    n = args.n or cfg.sample.n
    img, label = source_images(cfg, n)
    refinement = build_refiner(cfg.sample, model)
    out_dir = args.out or (run / "edits" / args.task)
    with torch.no_grad():
        edited, pyramid, known = edit(model, vae, img, label, args.task, cfg.sample, refinement)
    extra = {"source": img, **{f"known_mask_s{k}": m for k, m in enumerate(known.mask)}}
    write_outputs(cfg, out_dir, edited, label, pyramid, {"task": args.task, "refine_cost": refinement.cost.as_dict()},
                  extra)
    log.info("wrote %d %s edits to %s", len(label), args.task, out_dir)
    return 0
