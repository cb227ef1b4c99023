"""``srdd train``: one VAR/SRDD transformer on pyramid shards with DeepSpeed ZeRO.

    srdd train model.size=d2 model.mask=srdd train.tokens=2000000 run_name=d2-srdd
    torchrun --nproc_per_node 2 -m pretrain.cli train ...      # 2 ranks (gloo on CPU)

Outputs in ``<SRDD_HOME>/<run_name>/``: config.yaml, metrics.jsonl (train/val records, see
docs/training.md), checkpoints/step_XXXXXXXX/, final.json and model.pt. Rerunning the same
command resumes from the latest complete checkpoint; a finished run is left as it is.
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import DistInfo, init_distributed
from pretrain.engine import build_engine
from pretrain.outputs import atomic_write_json, run_dir, save_config
from pretrain.model.flops import train_flops_executed_per_sample, train_flops_per_sample
from pretrain.train.budget import tokens_per_sample, total_steps
from pretrain.train.checkpoint import CheckpointManager, check_compatible, frozen_keys, read_meta
from pretrain.train.data import codes_loader, model_batches
from pretrain.train.export import consolidated_state_dict, save_model
from pretrain.train.metrics import MetricsLogger
from pretrain.train.signals import REQUEUE_FILE, StopRequest, mark_for_requeue
from pretrain.train.step import ScaleStats, Stepper, evaluate

log = logging.getLogger("srdd.train")


@dataclass
class Progress:
    """Counters that survive restarts (stored in each checkpoint's meta.json)."""
    step: int = 0
    time_s: float = 0.0  # training wall time summed over all jobs of the run


def load_frozen_tokenizer(cfg: SRDDConfig, device: torch.device) -> tuple[Any, str]:
    from pretrain.tokenizer import default_tokenizer_path, load_tokenizer, tokenizer_hash

    path = default_tokenizer_path(cfg)
    if not Path(path).is_file():
        raise ConfigError(f"tokenizer.ckpt: no tokenizer at {path}; train one (srdd tokenizer-train "
                          "run_name=tokenizer) or set tokenizer.ckpt")
    vae = load_tokenizer(path).to(device).requires_grad_(False)
    checks = {"tokenizer.vocab_size": (cfg.tokenizer.vocab_size, vae.vocab_size),
              "tokenizer.z_channels": (cfg.tokenizer.z_channels, vae.Cvae),
              "tokenizer.patch_nums": (list(cfg.tokenizer.patch_nums), list(vae.patch_nums))}
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    if bad:
        raise ConfigError(f"config disagrees with the tokenizer file {path}: " + ", ".join(
            f"{k}={a!r} but the file has {b!r}" for k, (a, b) in bad.items()))
    return vae, tokenizer_hash(path)


def check_pyramids(loader: Any, tokenizer_sha256: str, patch_nums: list[int]) -> None:
    """Pyramid shards are only meaningful with the tokenizer that encoded them."""
    if loader.tokenizer_sha256 != tokenizer_sha256:
        raise ConfigError(f"data.pyramids_dir holds pyramids of tokenizer sha256 {loader.tokenizer_sha256[:12]}..., "
                          f"but tokenizer.ckpt has sha256 {tokenizer_sha256[:12]}...; re-run srdd pyramids")
    if list(loader.patch_nums) != patch_nums:
        raise ConfigError(f"tokenizer.patch_nums={patch_nums} but data.pyramids_dir was made with {list(loader.patch_nums)}")


class Trainer:
    def __init__(self, cfg: SRDDConfig, info: DistInfo):
        from pretrain.model import build_model
        from pretrain.pyramid.codec import build_codec

        self.cfg, self.info, self.device = cfg, info, info.device
        self.run = run_dir(cfg)
        t = cfg.train
        self.ckpts = CheckpointManager(self.run / "checkpoints", info, t.keep_last, t.milestones)
        latest = self.ckpts.latest()
        if latest is not None:  # refuse a mismatched resume before any expensive set-up
            check_compatible(read_meta(latest)["frozen"], frozen_keys(cfg, info.world_size), latest)
        # pixel-space cells need no tokenizer; the codec (pretrain/pyramid) gives targets, input width and loss
        self.vae, self.tokenizer_hash = (load_frozen_tokenizer(cfg, self.device) if cfg.pyramid.space == "latent"
                                         else (None, ""))
        self.codec = build_codec(cfg, self.vae)
        patch_nums = list(cfg.tokenizer.patch_nums)
        torch.manual_seed(cfg.seed)  # identical init on every rank
        model = build_model(cfg.model, self.codec.head_dim, self.codec.in_channels, patch_nums)
        self.params, self.non_embedding_params = model.num_params(), model.num_non_embedding_params()
        self.L = tokens_per_sample(patch_nums)
        self.flops_per_sample = train_flops_per_sample(model)
        self.flops_executed_per_sample = train_flops_executed_per_sample(model)
        self.total_steps = total_steps(t, self.L)
        self.micro_batch = t.batch_size // (info.world_size * t.grad_accum)
        self.engine = build_engine(model, t, self.total_steps, info.world_size)
        torch.manual_seed(cfg.seed * 1000 + info.rank)  # class dropout differs per rank
        self.loader = self.targets("train")
        if cfg.pyramid.uses_pyramid_shards:
            check_pyramids(self.loader, self.tokenizer_hash, patch_nums)
        self.stats = ScaleStats(patch_nums)
        self.progress = Progress()
        self.stepper = Stepper(self.engine, model_batches(self.loader, self.codec, self.device), self.stats,
                               t.label_smoothing, t.grad_accum, t.max_bad_steps, self.device, self.codec.head.loss)

    def targets(self, split: str) -> Any:
        """This rank's (label_B, codes per scale) loader: pyramid shards or encoded images (pyramid.data)."""
        return codes_loader(self.cfg, self.codec, split, self.micro_batch, self.info.rank, self.info.world_size,
                            device=self.device)

    # ---- accounting --------------------------------------------------------------------
    def counters(self, step: int) -> dict[str, Any]:
        samples = step * self.cfg.train.batch_size
        return {"step": step, "samples": samples, "tokens": samples * self.L,
                "flops": samples * self.flops_per_sample, "flops_executed": samples * self.flops_executed_per_sample}

    # ---- checkpoints -------------------------------------------------------------------
    def resume(self) -> None:
        latest = self.ckpts.latest()
        if latest is None:
            return
        meta, rank_state = self.ckpts.load(self.engine, latest)
        self.loader.load_state_dict(rank_state["loader"])
        self.stats.sums_3K = rank_state["stats"]
        self.progress = Progress(**meta["progress"])
        log.info("resumed from %s (step %d of %d)", latest, self.progress.step, self.total_steps)

    def save(self) -> Path:
        meta = {"progress": vars(self.progress), "frozen": frozen_keys(self.cfg, self.info.world_size),
                **self.counters(self.progress.step)}
        rank_state = {"loader": self.loader.state_dict(), "stats": self.stats.sums_3K.clone()}
        return self.ckpts.save(self.engine, self.progress.step, meta, rank_state)

    # ---- the loop ----------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        # A fresh deterministic val stream each time: every pass scores the same batches, and
        # every rank runs the same number of forwards (ZeRO-3 gathers are collectives).
        stats = ScaleStats(self.cfg.tokenizer.patch_nums)
        out = evaluate(self.engine, model_batches(self.targets("val"), self.codec, self.device), stats,
                       self.cfg.train.val_batches, self.device, self.codec.head.loss)
        return {"kind": "val", **self.counters(self.progress.step), **out}

    def train(self, metrics: MetricsLogger, stop: StopRequest) -> str:
        """Train to the budget; returns "complete", "stopped" (stop_after) or "preempted"."""
        t, steps_here = self.cfg.train, 0
        interval_s, interval_steps, skipped = 0.0, 0, 0
        while self.progress.step < self.total_steps:
            lr = self.engine.get_lr()[0]  # the lr this step uses (the scheduler steps inside)
            t0 = time.perf_counter()
            outcome = self.stepper.step(stop)
            dt = time.perf_counter() - t0
            self.progress.step += 1
            self.progress.time_s += dt
            steps_here += 1
            interval_s, interval_steps, skipped = interval_s + dt, interval_steps + 1, skipped + outcome.skipped_batches
            step, last = self.progress.step, self.progress.step == self.total_steps
            if step % t.log_every == 0 or last:
                rec = {"kind": "train", **self.counters(step), "lr": lr,
                       "grad_norm": outcome.grad_norm, **self.stats.reduce(self.device),
                       "tokens_per_s": interval_steps * t.batch_size * self.L / interval_s,
                       "time_s": self.progress.time_s, "skipped_batches": skipped}
                metrics.log(rec)
                interval_s, interval_steps, skipped = 0.0, 0, 0
            if (t.val_every and step % t.val_every == 0) and not last:
                metrics.log(self.validate())
            stopping = outcome.stop or (t.stop_after and steps_here >= t.stop_after)
            if step % t.ckpt_every == 0 or last or stopping:
                self.save()
            if outcome.stop:
                return "preempted"
            if stopping and not last:
                return "stopped"
        return "complete"

    def finish(self, metrics: MetricsLogger) -> dict[str, Any]:
        """Final val pass, model.pt and final.json (the sweep's runs table reads it)."""
        val = self.validate()
        metrics.log(val)
        state_dict = consolidated_state_dict(self.engine) if self.cfg.train.export_model else None
        final = {"status": "completed", "run": self.cfg.run_name, "size": self.cfg.model.size,
                 "mask": self.cfg.model.mask, "attn_window": self.cfg.model.window, "pyramid": self.cfg.pyramid.cell,
                 "params": self.params,
                 "non_embedding_params": self.non_embedding_params, **self.counters(self.progress.step),
                 "val_loss": val["loss"], "val_loss_per_scale": val["loss_per_scale"],
                 "time_s": self.progress.time_s}
        if self.info.is_main:
            if state_dict is not None:
                save_model(self.run / "model.pt", state_dict, self.cfg, self.progress.step,
                           final["tokens"], self.tokenizer_hash)
            atomic_write_json(self.run / "final.json", final)
        return final


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    # DeepSpeed's ZeRO collectives trip torch's deprecation warning on every step.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    info = init_distributed()
    trainer = Trainer(cfg, info)
    trainer.resume()
    run = trainer.run
    if info.is_main:
        save_config(cfg, run)
        (run / REQUEUE_FILE).unlink(missing_ok=True)  # a stale note must not requeue a later job
        if trainer.progress.step < trainer.total_steps:  # (re)opened, e.g. with a larger budget
            (run / "final.json").unlink(missing_ok=True)
    metrics = MetricsLogger(run, enabled=info.is_main, wandb_mode=cfg.train.wandb, project=cfg.train.wandb_project,
                            run_name=cfg.run_name, config=OmegaConf.to_container(OmegaConf.structured(cfg)))
    metrics.drop_after(trainer.progress.step)
    stop = StopRequest(run)
    try:
        outcome = trainer.train(metrics, stop)
        if outcome == "complete" and not (run / "final.json").exists():
            trainer.finish(metrics)
        elif outcome == "preempted" and info.is_main:
            mark_for_requeue(run)
    finally:
        stop.restore()
        metrics.close()
    log.info("%s: %s at step %d/%d", cfg.run_name, outcome, trainer.progress.step, trainer.total_steps)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Resumes automatically from <run>/checkpoints; see docs/training.md."
