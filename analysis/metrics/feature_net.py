"""`srdd eval-net-train`: train the platform's own feature network on the dataset's image shards.

Writes ``eval.net_ckpt`` (default ``<SRDD_HOME>/eval_net/<dataset>.pt``) with its
metadata (name, val accuracy, dataset manifest hash) and prints the file's
sha256, which every reference statistic and eval record made with it carries.
Trained on the platform's harness (pretrain/train/trainer.py) with its own recipe (AdamW,
one-cycle lr, no clipping, fp32, no ZeRO): its metrics.jsonl (``eval_net_train`` records) and
checkpoints live in ``<net file's directory>/<net file's stem>-train/``; a rerun resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from analysis.metrics.cnn import ClassifierCNN, load_classifier, save_classifier
from analysis.metrics.networks import default_classifier_path
from data_pipeline import shards_manifest_path, source_slug
from data_pipeline.files import file_sha256
from pretrain.config import SRDDConfig
from pretrain.dist import DistInfo, init_distributed
from pretrain.engine import build_engine
from pretrain.outputs import save_config
from pretrain.train.export import consolidated_state_dict
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window, WindowMeans
from pretrain.train.trainer import Trainer

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


class FeatureNetTask(TaskDefaults):
    """Cross-entropy of the classifier (engine ``model``) on augmented train images."""

    kind = "eval_net_train"

    def __init__(self, cfg: SRDDConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.manifest_path = shards_manifest_path(cfg)
        self.manifest = json.loads(self.manifest_path.read_text())
        self.n_train = int(self.manifest["splits"]["train"]["count"])
        bs = cfg.eval.net_batch_size
        self.path = default_classifier_path(cfg.eval, cfg.data.source)
        self.run = self.path.parent / f"{self.path.stem}-train"
        self.outputs = (self.path,)
        steps = cfg.eval.net_epochs * math.ceil(self.n_train / bs)
        self.schedule = Schedule.from_train(cfg.train, steps, grad_accum=1, val_every=0)
        # its own recipe: AdamW + one-cycle (below), no clipping, fp32, no ZeRO (a 60k-parameter CNN)
        self.engine_cfg = dataclasses.replace(cfg.train, batch_size=bs, grad_accum=1, grad_clip=0.0, zero_stage=0,
                                              precision="fp32")
        self.gen = torch.Generator().manual_seed(cfg.seed + info.rank)  # augmentation draws
        self.engines: dict[str, Any] = {}
        self.window = WindowMeans()

    def frozen(self) -> dict[str, Any]:
        return {"manifest_sha256": file_sha256(self.manifest_path), "eval.net_batch_size": self.cfg.eval.net_batch_size,
                "eval.net_epochs": self.cfg.eval.net_epochs, "world_size": self.info.world_size}

    def setup(self) -> None:
        from data_pipeline.image_shards.loader import image_stream

        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        self.net = ClassifierCNN(num_classes=int(self.manifest["num_classes"]))
        lr_peak, steps = cfg.eval.net_lr_peak, self.schedule.total_steps
        self.engines = {"model": build_engine(
            self.net, self.engine_cfg, steps, info.world_size,
            optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=lr_peak, weight_decay=1e-4),
            schedule=lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr_peak, total_steps=steps,
                                                                     pct_start=0.15))}
        self.stream = image_stream(cfg, "train", cfg.eval.net_batch_size // info.world_size, info.rank,
                                   info.world_size, cfg.seed, True)
        log.info("training %s on %d images for %d steps", type(self.net).__name__, self.n_train, steps)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.stream)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> StepLoss:
        img_B3HW, label_B = batch
        return StepLoss({"model": F.cross_entropy(self.engines["model"](random_affine(img_B3HW, self.gen)), label_B)})

    def accumulate(self, out: StepLoss) -> None:
        self.window.add({"loss": out.objectives["model"].detach()})

    def record(self, window: Window) -> dict[str, Any]:
        record = {**self.window.pop(), "images_per_s": window.steps * self.cfg.eval.net_batch_size / window.seconds}
        log.info("step %d/%d loss %.4f (%.0f img/s)", window.step, self.schedule.total_steps, record["loss"],
                 record["images_per_s"])
        return record

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.stream.state_dict(), "gen": self.gen.get_state(), "window": self.window.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["data"])
        self.gen.set_state(state["gen"])
        self.window.load_state_dict(state["window"])

    def finish(self, progress: Progress, log_record: Log) -> None:
        from data_pipeline.image_shards.loader import image_loader

        state_dict = consolidated_state_dict(self.engines["model"])
        if not self.info.is_main:
            return
        cfg = self.cfg
        acc = accuracy(self.net, image_loader(cfg, split="val", batch_size=cfg.eval.batch_size, infinite=False))
        meta = {"name": f"{source_slug(cfg.data.source)}-cnn", "val_acc": acc, "train_images": self.n_train,
                "steps": progress.step, "manifest_sha256": file_sha256(self.manifest_path),
                "resolution": cfg.data.resolution}
        log_record({"kind": "eval_net", "step": progress.step, **meta})
        save_classifier(self.net, self.path, meta, state_dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-acc", type=float, default=0.0, help="exit 1 if val accuracy is below this (e.g. 0.98 on MNIST)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    info = init_distributed()
    task = FeatureNetTask(cfg, info)
    Trainer(task, task.run, info, run_name=task.run.name,
            config=OmegaConf.to_container(OmegaConf.structured(cfg))).run()
    if not info.is_main:
        return 0
    _, meta = load_classifier(task.path)
    save_config(cfg, task.path.parent)
    print(json.dumps({"path": str(task.path), "sha256": file_sha256(task.path), **meta}, sort_keys=True))
    if meta["val_acc"] < args.min_acc:
        log.error("val accuracy %.4f is below --min-acc %.4f", meta["val_acc"], args.min_acc)
        return 1
    return 0
