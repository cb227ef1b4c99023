"""`srdd tokenizer-train`: train the multi-scale residual VQ-VAE (VAR never released this).

Loss per step (VQGAN recipe on VAR's quantiser):
  recon (L1 or L2 on pixels) + vq (beta * commitment + codebook, averaged over scales;
  gradients pass straight through the whole residual quantiser)
  + perceptual_weight * LPIPS (tokenizer.lpips: alex/vgg on the packaged weights, pretrain/tokenizer/lpips.py)
  + disc_weight * hinge generator loss of a PatchGAN (from step tokenizer.disc_start on).
Data parallel over ranks with a DeepSpeed engine (pretrain.engine.build_engine); the codebook
is initialised from the first batch's encoder outputs and dead codes are restarted every
``dead_code_every`` steps. Outputs under <SRDD_HOME>/<run_name>/: config.yaml, metrics.jsonl
(``tokenizer_train`` / ``tokenizer_val`` records), checkpoints/step_XXXXXXXX/ (resumed
automatically) and tokenizer.pt (the exported model, srdd-tokenizer-v1).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import init_distributed
from pretrain.engine import build_engine
from pretrain.outputs import append_jsonl, run_dir, save_config
from pretrain.tokenizer.checkpoint import build_tokenizer, save_tokenizer
from pretrain.tokenizer.codebook import CodebookMonitor
from pretrain.tokenizer.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from pretrain.tokenizer.lpips import build_perceptual
from pretrain.tokenizer.vqvae import MultiScaleVQVAE

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


class Checkpoints:
    """checkpoints/step_XXXXXXXX/ (DeepSpeed engine + loop state); the discriminator under disc/."""

    def __init__(self, root: Path, keep_last: int, milestones: list[int]):
        self.root, self.keep_last, self.milestones = root, keep_last, set(milestones)

    @staticmethod
    def tag(step: int) -> str:
        return f"step_{step:08d}"

    def latest_tag(self) -> str | None:
        latest = self.root / "latest"
        return latest.read_text().strip() if latest.is_file() else None

    def save(self, step: int, engine: Any, disc: Any | None, state: dict[str, Any], is_main: bool) -> None:
        tag = self.tag(step)
        if disc is not None:
            disc.save_checkpoint(str(self.root / "disc"), tag=tag, save_latest=False)
        engine.save_checkpoint(str(self.root), tag=tag, client_state=state)  # writes `latest` last
        if is_main:
            self.prune(keep=tag)

    def prune(self, keep: str) -> None:
        steps = sorted(p.name for p in self.root.glob("step_*") if p.is_dir())
        for name in steps[:-self.keep_last]:
            if name != keep and int(name[5:]) not in self.milestones:
                shutil.rmtree(self.root / name, ignore_errors=True)
                shutil.rmtree(self.root / "disc" / name, ignore_errors=True)

    def load(self, engine: Any, disc: Any | None) -> dict[str, Any] | None:
        tag = self.latest_tag()
        if tag is None:
            return None
        _, state = engine.load_checkpoint(str(self.root), tag=tag)
        if disc is not None and (self.root / "disc" / tag).is_dir():
            disc.load_checkpoint(str(self.root / "disc"), tag=tag, load_optimizer_states=True)
        return state


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


def main(cfg: SRDDConfig, args: argparse.Namespace | None = None) -> int:
    from data_pipeline.image_shards.loader import image_stream  # (img_B3HW, label_B) batches, resumable

    tok = cfg.tokenizer
    info = init_distributed()
    torch.manual_seed(cfg.seed)
    vae = build_tokenizer(tok)
    check_config(cfg, vae)
    perceptual = build_perceptual(tok, info.device)
    out = run_dir(cfg)
    if info.is_main:
        save_config(cfg, out)
    micro = tok.batch_size // info.world_size
    engine = build_engine(vae, engine_train_config(cfg, tok.lr), tok.steps, info.world_size)
    disc = None
    if tok.disc_start >= 0:
        disc = build_engine(PatchDiscriminator(), engine_train_config(cfg, tok.lr), tok.steps, info.world_size)
    ckpts = Checkpoints(out / "checkpoints", cfg.train.keep_last, cfg.train.milestones)
    state = ckpts.load(engine, disc) or {}
    start = int(state.get("step", 0))
    monitor = CodebookMonitor(vae.quantize)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * start)
    train_stream = image_stream(cfg, "train", micro, info.rank, info.world_size, cfg.seed, True)
    if start:
        monitor.restart_hits_V = state["restart_hits_V"].float().cpu()
        monitor.updates = int(state["monitor_updates"])
        # every rank has consumed the same number of batches: rank 0's position is everyone's
        train_stream.load_state_dict({**state["data"], "world_size": info.world_size})
    train_it = iter(train_stream)
    metrics = out / "metrics.jsonl"
    # Codes are edited in place on the module: only when no optimiser keeps its own master copy.
    restarts = tok.dead_code_every > 0 and cfg.train.zero_stage == 0 and cfg.train.precision == "fp32"
    if tok.dead_code_every and not restarts:
        log.warning("dead-code restarts off: they need train.zero_stage=0 and train.precision=fp32")
    if start == 0 and restarts:
        monitor.restart_dead(batch_residuals(vae, next(train_it)[0].to(info.device)), gen)
    log.info("tokenizer-train: %s params, %d ranks x %d images, steps %d -> %d, run dir %s",
             f"{sum(p.numel() for p in vae.parameters()):,}", info.world_size, micro, start, tok.steps, out)

    def val_record(step: int) -> None:
        val_it = iter(image_stream(cfg, "val", micro, info.rank, info.world_size, cfg.seed, False))
        record = {"kind": "tokenizer_val", "step": step, **validate(vae, val_it, tok.val_batches)}
        if info.is_main:
            append_jsonl(metrics, record)
            log.info("val step %d: PSNR %.2f dB, usage per scale %s", step, record["psnr"], record["usage_per_scale"])

    t0, t_win, sums, bad = time.time(), time.time(), _zero_sums(), 0
    for step in range(start, tok.steps):
        img = next(train_it)[0].to(info.device)
        terms, rec, idx_list = step_losses(engine, disc, perceptual, img, tok, step)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            bad += 1
            log.warning("step %d: non-finite loss %s, skipped (%d in a row)", step, float(loss), bad)
            if bad > cfg.train.max_bad_steps:
                raise RuntimeError(f"{bad} consecutive non-finite losses: stopping (train.max_bad_steps)")
            continue
        bad = 0
        engine.backward(loss)
        engine.step()
        if disc is not None and step >= tok.disc_start:
            terms["d"] = disc_step(disc, img, rec)
        monitor.record(idx_list)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        sums["n"] += 1
        done = step + 1
        if restarts and done % tok.dead_code_every == 0 and done < tok.steps:
            sums["restarted"] += monitor.restart_dead(batch_residuals(vae, img), gen)
        if done % tok.log_every == 0 or done == tok.steps:
            n = max(sums.pop("n"), 1)
            record = {"kind": "tokenizer_train", "step": done, "lr": engine.get_lr()[0],
                   **{k: (v / n if k != "restarted" else int(v)) for k, v in sums.items()},
                   **monitor.summary(), "images_per_s": n * tok.batch_size / (time.time() - t_win),
                   "time_s": round(time.time() - t0, 2)}
            record["loss"] = sum(record.get(k, 0.0) for k in ("recon", "vq", "perceptual", "g"))
            if info.is_main:
                append_jsonl(metrics, record)
                log.info("step %d: loss %.4f recon %.4f vq %.4f usage %s", done, record["loss"], record["recon"],
                         record["vq"], record["usage_per_scale"])
            sums, t_win = _zero_sums(), time.time()
        if (tok.val_every and done % tok.val_every == 0) or done == tok.steps:
            val_record(done)
        if done % tok.ckpt_every == 0 or done == tok.steps:
            ckpts.save(done, engine, disc, {"step": done, "restart_hits_V": monitor.restart_hits_V,
                                            "monitor_updates": monitor.updates, "data": train_stream.state_dict()},
                       info.is_main)
    if info.is_main:
        path = save_tokenizer(vae, out / "tokenizer.pt", tok)
        log.info("exported %s", path)
    return 0


def _zero_sums() -> dict[str, float]:
    return {"n": 0, "restarted": 0}


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


def disc_step(disc: Any, img: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    d_loss = hinge_d_loss(disc(img), disc(rec))
    disc.backward(d_loss)
    disc.step()
    return d_loss.detach()

