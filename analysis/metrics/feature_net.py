"""`srdd eval-net-train`: train the platform's own feature network on the dataset's image shards.

Writes ``eval.net_ckpt`` (default ``<SRDD_HOME>/eval_net/<dataset>.pt``) with its
metadata (name, val accuracy, dataset manifest hash) and prints the file's
sha256, which every reference statistic and eval record made with it carries.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from analysis.metrics.cnn import ClassifierCNN, save_classifier
from analysis.metrics.networks import default_classifier_path
from data_pipeline import shards_manifest_path, source_slug
from pretrain.config import SRDDConfig
from pretrain.outputs import save_config

log = logging.getLogger("srdd.eval_net")

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def random_affine(img_B3HW: torch.Tensor, gen: torch.Generator, rot_rad: float = 0.17, scale: float = 0.1,
                  shift: float = 0.125) -> torch.Tensor:
    """Per-sample small rotation/scale/shift (shift as a fraction of the half-side); background stays -1."""
    B = img_B3HW.shape[0]
    u = torch.rand(B, 4, generator=gen) * 2 - 1
    ang, s = u[:, 0] * rot_rad, 1 + u[:, 1] * scale
    cos, sin = s * torch.cos(ang), s * torch.sin(ang)
    theta_B23 = torch.stack([torch.stack([cos, -sin, u[:, 2] * shift], 1), torch.stack([sin, cos, u[:, 3] * shift], 1)], 1)
    grid = F.affine_grid(theta_B23, list(img_B3HW.shape), align_corners=False)
    return F.grid_sample(img_B3HW + 1, grid, align_corners=False) - 1  # zero padding in [0, 2] space = black


@torch.no_grad()
def accuracy(net: ClassifierCNN, batches: Batches) -> float:
    net.eval()
    correct = total = 0
    for img_B3HW, label_B in batches:
        correct += int((net(img_B3HW).argmax(1) == label_B).sum())
        total += label_B.numel()
    return correct / max(total, 1)


def train_classifier(net: ClassifierCNN, train_batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
                     val_batches: Callable[[], Batches], lr_peak: float = 5e-3, seed: int = 0,
                     log_every: int = 100) -> float:
    """AdamW with a one-cycle schedule for ``steps`` batches of augmented images; returns val accuracy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr_peak, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr_peak, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    net.train()
    for step in range(steps):
        img_B3HW, label_B = next(train_batches)
        loss = F.cross_entropy(net(random_affine(img_B3HW, gen)), label_B)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.info("step %d/%d loss %.4f (%.0f img/s)", step + 1, steps, loss.item(),
                     (step + 1) * img_B3HW.shape[0] / (time.time() - t0))
    return accuracy(net, val_batches())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-acc", type=float, default=0.0, help="exit 1 if val accuracy is below this (e.g. 0.98 on MNIST)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from data_pipeline.files import file_sha256
    from data_pipeline.image_shards.loader import image_loader

    torch.manual_seed(cfg.seed)
    manifest_path = shards_manifest_path(cfg)
    manifest = json.loads(manifest_path.read_text())
    n_train = int(manifest["splits"]["train"]["count"])
    bs = cfg.eval.net_batch_size
    steps = cfg.eval.net_epochs * math.ceil(n_train / bs)
    train = image_loader(cfg, split="train", batch_size=bs, seed=cfg.seed, infinite=True)
    val = lambda: image_loader(cfg, split="val", batch_size=cfg.eval.batch_size, infinite=False)  # noqa: E731
    net = ClassifierCNN(num_classes=int(manifest["num_classes"]))
    log.info("training %s on %d images for %d steps", type(net).__name__, n_train, steps)
    acc = train_classifier(net, iter(train), steps, val, lr_peak=cfg.eval.net_lr_peak, seed=cfg.seed)
    path = default_classifier_path(cfg.eval, cfg.data.source)
    meta = {"name": f"{source_slug(cfg.data.source)}-cnn", "val_acc": acc, "train_images": n_train, "steps": steps,
            "manifest_sha256": file_sha256(manifest_path), "resolution": cfg.data.resolution}
    sha = save_classifier(net, path, meta)
    save_config(cfg, path.parent)
    print(json.dumps({"path": str(path), "sha256": sha, **meta}, sort_keys=True))
    if acc < args.min_acc:
        log.error("val accuracy %.4f is below --min-acc %.4f", acc, args.min_acc)
        return 1
    return 0
