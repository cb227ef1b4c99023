"""`srdd tokenizer-train`: train the multi-scale residual VQ-VAE (VAR never released this).

Loss per step (VQGAN recipe on VAR's quantiser):
  recon (L1 or L2 on pixels) + vq (beta * commitment + codebook, averaged over scales;
  gradients pass straight through the whole residual quantiser)
  + perceptual_weight * LPIPS (tokenizer.lpips: alex/vgg on the packaged weights, pretrain/tokenizer/lpips.py)
  + disc_weight * hinge generator loss of a PatchGAN (from step tokenizer.disc_start on).
Data parallel over ranks on the training harness (pretrain/train/trainer.py) with two DeepSpeed
engines, ``model`` (the VQ-VAE) and ``disc`` (the PatchGAN, when on); the codebook is
initialised from the first batch's encoder outputs and dead codes are restarted every
``dead_code_every`` steps. Outputs under <SRDD_HOME>/<run_name>/: config.yaml, metrics.jsonl
(``tokenizer_train`` / ``tokenizer_val`` records), checkpoints/step_XXXXXXXX/ (the harness's
format; resumed automatically) and tokenizer.pt (the exported model, srdd-tokenizer-v1).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import DistInfo, init_distributed
from pretrain.engine import build_engine
from pretrain.outputs import run_dir, save_config
from pretrain.tokenizer.checkpoint import arch_kwargs, build_tokenizer, save_tokenizer
from pretrain.tokenizer.codebook import CodebookMonitor
from pretrain.tokenizer.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from pretrain.tokenizer.lpips import build_perceptual
from pretrain.tokenizer.vqvae import MultiScaleVQVAE
from pretrain.train.export import consolidated_state_dict
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window, WindowMeans
from pretrain.train.trainer import Trainer

log = logging.getLogger("srdd.tokenizer")
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def psnr_db(mse_pm1: float) -> float:
    """PSNR of images in [-1, 1] measured on the [0, 1] scale: 10 log10(1 / (mse / 4))."""
    return 10 * math.log10(4.0 / max(mse_pm1, 1e-12))


def recon_loss(rec: torch.Tensor, img: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(rec, img) if kind == "l1" else F.mse_loss(rec, img)


def engine_train_config(cfg: SRDDConfig, lr: float) -> Any:
    """The transformer's optimiser settings with the tokenizer's batch, lr, steps and decay."""
    tok = cfg.tokenizer
    return dataclasses.replace(cfg.train, batch_size=tok.batch_size, grad_accum=1, lr_peak=lr,
                               weight_decay=tok.weight_decay, max_steps=tok.steps)


def check_config(cfg: SRDDConfig, vae: MultiScaleVQVAE) -> None:
    side = cfg.data.resolution
    if side % vae.downsample or side // vae.downsample != vae.patch_nums[-1]:
        raise ConfigError(
            f"data.resolution={side} with tokenizer.ch_mult={cfg.tokenizer.ch_mult} (downsampling {vae.downsample}) "
            f"gives a {side // vae.downsample}px latent, but tokenizer.patch_nums ends at {vae.patch_nums[-1]}")


@torch.no_grad()
def validate(vae: MultiScaleVQVAE, batches: Batches, max_batches: int) -> dict[str, Any]:
    """PSNR through the real tokenization path (encode_pyramid -> decode_pyramid), summed over ranks."""
    import torch.distributed as dist

    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    sums = torch.zeros(2)  # squared error, number of pixel values
    V = vae.vocab_size
    hits_KV = torch.zeros(len(vae.patch_nums), V)
    for i, (img, _) in enumerate(batches):
        if i >= max_batches:
            break
        img = img.to(device)
        idx = vae.encode_pyramid(img)
        rec = vae.decode_pyramid(idx)
        sums += torch.tensor([float((rec - img).square().sum()), float(img.numel())])
        hits_KV += torch.stack([t.flatten().bincount(minlength=V).float().cpu() for t in idx])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sums)
        dist.all_reduce(hits_KV)
    vae.train(was_training)
    mse = float(sums[0] / sums[1].clamp_min(1))
    return {"psnr": round(psnr_db(mse), 3), "recon_mse": mse,
            "usage_per_scale": [round(float(u), 4) for u in (hits_KV > 0).float().mean(1)]}


class TokenizerTask(TaskDefaults):
    """`srdd tokenizer-train` on the harness: engines ``model`` (VQ-VAE) and ``disc`` (PatchGAN, optional)."""

    kind = "tokenizer_train"

    def __init__(self, cfg: SRDDConfig, info: DistInfo):
        tok = cfg.tokenizer
        self.cfg, self.tok, self.info = cfg, tok, info
        self.run = run_dir(cfg)
        self.outputs = (self.run / "tokenizer.pt",)
        self.schedule = Schedule.from_train(cfg.train, tok.steps, grad_accum=1, log_every=tok.log_every,
                                            val_every=tok.val_every, ckpt_every=tok.ckpt_every)
        self.micro = tok.batch_size // info.world_size
        # Codes are edited in place on the module: only when no optimiser keeps its own master copy.
        self.restarts = tok.dead_code_every > 0 and cfg.train.zero_stage == 0 and cfg.train.precision == "fp32"
        if tok.dead_code_every and not self.restarts:
            log.warning("dead-code restarts off: they need train.zero_stage=0 and train.precision=fp32")
        self.engines: dict[str, Any] = {}
        self.step = 0  # the step being computed (0-based): the discriminator joins at tokenizer.disc_start
        self.window, self.restarted = WindowMeans(), 0  # loss terms; dead codes restarted in the window
        self.gen = torch.Generator().manual_seed(cfg.seed)  # dead-code restart draws

    def frozen(self) -> dict[str, Any]:
        return {**{f"tokenizer.{k}": v for k, v in arch_kwargs(self.tok).items()},
                "tokenizer.batch_size": self.tok.batch_size, "discriminator": self.tok.disc_start >= 0,
                "train.zero_stage": self.cfg.train.zero_stage, "train.precision": self.cfg.train.precision,
                "world_size": self.info.world_size}

    def setup(self) -> None:
        from data_pipeline.image_shards.loader import image_stream  # (img_B3HW, label_B) batches, resumable

        cfg, tok, info = self.cfg, self.tok, self.info
        torch.manual_seed(cfg.seed)
        self.vae = build_tokenizer(tok)
        check_config(cfg, self.vae)
        self.perceptual = build_perceptual(tok, info.device)
        if info.is_main:
            save_config(cfg, self.run)
        self.engines = {"model": build_engine(self.vae, engine_train_config(cfg, tok.lr), tok.steps, info.world_size)}
        if tok.disc_start >= 0:
            self.engines["disc"] = build_engine(PatchDiscriminator(), engine_train_config(cfg, tok.lr), tok.steps,
                                                info.world_size)
        self.monitor = CodebookMonitor(self.vae.quantize)
        self.stream = image_stream(cfg, "train", self.micro, info.rank, info.world_size, cfg.seed, True)
        log.info("tokenizer-train: %s params, %d ranks x %d images, %d steps, run dir %s",
                 f"{sum(p.numel() for p in self.vae.parameters()):,}", info.world_size, self.micro, tok.steps, self.run)

    def begin(self, progress: Progress, log_record: Log) -> None:
        self.step = progress.step
        self.train_it = iter(self.stream)  # after any resume: starts at the restored position
        if progress.step == 0 and self.restarts:
            self.monitor.restart_dead(batch_residuals(self.vae, next(self.train_it)[0].to(self.info.device)), self.gen)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.train_it

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> StepLoss:
        img = batch[0].to(self.info.device)
        terms, rec, idx_list = step_losses(self.engines["model"], self.engines.get("disc"), self.perceptual, img,
                                           self.tok, self.step)
        objectives = {"model": sum(terms.values())}
        if "g" in terms:  # the discriminator trains from the step the generator starts using it
            objectives["disc"] = hinge_d_loss(self.engines["disc"](img), self.engines["disc"](rec))
        return StepLoss(objectives, {"terms": terms, "img": img, "idx_list": idx_list})

    def accumulate(self, out: StepLoss) -> None:
        self.monitor.record(out.metrics["idx_list"])
        terms = {**out.metrics["terms"], **({"d": out.objectives["disc"]} if "disc" in out.objectives else {})}
        self.window.add({k: v.detach() for k, v in terms.items()})
        self.last_img = out.metrics["img"]

    def after_step(self, step: int) -> None:
        self.step = step
        if self.restarts and step % self.tok.dead_code_every == 0 and step < self.tok.steps:
            self.restarted += self.monitor.restart_dead(batch_residuals(self.vae, self.last_img), self.gen)

    def record(self, window: Window) -> dict[str, Any]:
        record = {**self.window.pop(), "restarted": self.restarted,
                  **self.monitor.summary(), "images_per_s": window.steps * self.tok.batch_size / window.seconds}
        record["loss"] = sum(record.get(k, 0.0) for k in ("recon", "vq", "perceptual", "g"))
        self.restarted = 0
        if self.info.is_main:
            log.info("step %d: loss %.4f recon %.4f vq %.4f usage %s", window.step, record["loss"], record["recon"],
                     record["vq"], record["usage_per_scale"])
        return record

    def validate(self, step: int) -> dict[str, Any]:
        from data_pipeline.image_shards.loader import image_stream

        val_it = iter(image_stream(self.cfg, "val", self.micro, self.info.rank, self.info.world_size, self.cfg.seed,
                                   False))
        record = {"kind": "tokenizer_val", "step": step, **validate(self.eval_model(), val_it, self.tok.val_batches)}
        if self.info.is_main:
            log.info("val step %d: PSNR %.2f dB, usage per scale %s", step, record["psnr"], record["usage_per_scale"])
        return record

    def eval_model(self) -> MultiScaleVQVAE:
        """What validation runs: the engine's module, or under ZeRO-3 a whole copy of it (each rank
        holds a partition of the weights, and encode/decode_pyramid read the codebook outside any
        forward, where ZeRO-3 would gather it). Collective under ZeRO-3: all ranks call it."""
        if self.engines["model"].zero_optimization_stage() != 3:
            return self.vae
        whole = build_tokenizer(self.tok).to(self.info.device)
        whole.load_state_dict(consolidated_state_dict(self.engines["model"]))
        return whole

    def state_dict(self) -> dict[str, Any]:
        m = self.monitor
        return {"data": self.stream.state_dict(), "window": self.window.state_dict(), "restarted": self.restarted,
                "restart_gen": self.gen.get_state(), "restart_hits_V": m.restart_hits_V.clone(),
                "window_hits_KV": m.window_hits_KV.clone(), "monitor_updates": m.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["data"])
        self.window.load_state_dict(state["window"])
        self.restarted = state["restarted"]
        self.gen.set_state(state["restart_gen"])
        self.monitor.restart_hits_V, self.monitor.window_hits_KV = state["restart_hits_V"], state["window_hits_KV"]
        self.monitor.updates = int(state["monitor_updates"])

    def finish(self, progress: Progress, log_record: Log) -> None:
        log_record(self.validate(progress.step))
        state_dict = consolidated_state_dict(self.engines["model"])  # whole under ZeRO-3 too
        if self.info.is_main:
            log.info("exported %s", save_tokenizer(self.vae, self.outputs[0], self.tok, state_dict))


def main(cfg: SRDDConfig, args: argparse.Namespace | None = None) -> int:
    info = init_distributed()
    task = TokenizerTask(cfg, info)
    Trainer(task, task.run, info, run_name=cfg.run_name,
            config=OmegaConf.to_container(OmegaConf.structured(cfg))).run()
    return 0


def batch_residuals(vae: MultiScaleVQVAE, img: torch.Tensor) -> list[torch.Tensor]:
    """Residual vectors of a batch under the current codebook: the restart candidates. Before
    step 0 no code has been hit, so the whole codebook starts as the first batch's encoder outputs."""
    with torch.no_grad():
        return vae.quantize.quantize(vae.img_to_f(img), vae.patch_nums, with_fhat=False)[2]


def step_losses(engine: Any, disc: Any | None, perceptual: nn.Module | None, img: torch.Tensor, tok: Any,
                step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Generator loss terms, the detached reconstruction (for D) and the token pyramid."""
    rec, vq_loss, idx_list, _ = engine(img)
    terms = {"recon": recon_loss(rec, img, tok.recon_loss), "vq": vq_loss}
    if perceptual is not None:
        terms["perceptual"] = tok.perceptual_weight * perceptual(rec.float(), img.float()).mean()
    if disc is not None and step >= tok.disc_start:
        # through the bare module (not D's engine, whose hooks expect its own backward), frozen so
        # the generator's loss does not write D's gradients
        disc.module.requires_grad_(False)
        terms["g"] = tok.disc_weight * hinge_g_loss(disc.module(rec))
        disc.module.requires_grad_(True)
    return terms, rec.detach(), idx_list

