"""``srdd train``: one VAR/SRDD transformer on pyramid shards with DeepSpeed ZeRO.

    srdd train model.size=d2 model.mask=srdd train.tokens=2000000 run_name=d2-srdd
    torchrun --nproc_per_node 2 -m pretrain.cli train ...      # 2 ranks (gloo on CPU)

Outputs in ``<SRDD_HOME>/<run_name>/``: config.yaml, metrics.jsonl (train/val records, see
docs/training.md), checkpoints/step_XXXXXXXX/, final.json, model.pt and, with ``train.snapshots``,
snapshots/stepXXXXXXXX.pt (the weights part-way, model.pt's format). Rerunning the same
command resumes from the latest complete checkpoint; a finished run is left as it is.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import DistInfo, init_distributed
from pretrain.engine import build_engine
from pretrain.model.flops import refine_objective_flops_factor, train_flops_executed_per_sample, train_flops_per_sample
from pretrain.outputs import append_jsonl, atomic_write_json, run_dir, save_config
from pretrain.train.budget import tokens_per_sample, total_steps
from pretrain.train.checkpoint import frozen_keys
from pretrain.train.data import codes_loader, model_batches
from pretrain.train.export import consolidated_state_dict, save_model
from pretrain.train.refine_objective import RemaskObjective
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window
from pretrain.train.token_loss import Batch, ScaleStats, TokenObjective, evaluate
from pretrain.train.trainer import Trainer

log = logging.getLogger("srdd.train")


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


def snapshot_steps(fractions: list[float], total_steps: int) -> set[int]:
    """The steps ``train.snapshots`` names: each fraction of the budget rounded, the last step excluded
    (model.pt is the weights there)."""
    return {s for s in (max(1, round(f * total_steps)) for f in fractions) if s < total_steps}


def snapshot_path(run: Path, step: int) -> Path:
    return run / "snapshots" / f"step{step:08d}.pt"


class TransformerTask(TaskDefaults):
    """`srdd train` on the harness: teacher-forced token CE of one transformer (engine ``model``)."""

    kind = "train"

    def __init__(self, cfg: SRDDConfig, info: DistInfo):
        self.cfg, self.info, self.device = cfg, info, info.device
        self.run = run_dir(cfg)
        patch_nums = list(cfg.tokenizer.patch_nums)
        self.L = tokens_per_sample(patch_nums)
        self.schedule = Schedule.from_train(cfg.train, total_steps(cfg.train, self.L))
        self.micro_batch = cfg.train.batch_size // (info.world_size * cfg.train.grad_accum)
        self.stats = ScaleStats(patch_nums)
        self.engines: dict[str, Any] = {}
        self.outputs = (self.run / "final.json",)  # model.pt is optional (train.export_model)
        self.snapshot_steps = snapshot_steps(cfg.train.snapshots, self.schedule.total_steps)

    def frozen(self) -> dict[str, Any]:
        return frozen_keys(self.cfg)  # not the world size: a run resumes on any number of ranks

    def setup(self) -> None:
        from pretrain.model import build_model
        from pretrain.pyramid.codec import build_codec

        cfg = self.cfg
        # pixel-space cells need no tokenizer; the codec (pretrain/pyramid) gives targets, input width and loss
        self.vae, self.tokenizer_hash = (load_frozen_tokenizer(cfg, self.device) if cfg.pyramid.space == "latent"
                                         else (None, ""))
        self.codec = build_codec(cfg, self.vae)
        remask = cfg.train.refine_objective != "off"
        if remask and not hasattr(self.codec, "draft_delta"):
            raise ConfigError(f"train.refine_objective={cfg.train.refine_objective} needs the VAR cell "
                              f"(pyramid latent-discrete-residual), not {cfg.pyramid.cell}: drafts enter through the VQ-VAE")
        torch.manual_seed(cfg.seed)  # identical init on every rank
        model = build_model(cfg.model, self.codec.head_dim, self.codec.in_channels, cfg.tokenizer.patch_nums,
                            refine_inputs=remask)
        self.params, self.non_embedding_params = model.num_params(), model.num_non_embedding_params()
        factor = refine_objective_flops_factor(cfg.train.refine_objective, cfg.train.refine_replace)
        self.flops_per_sample = round(factor * train_flops_per_sample(model))
        self.flops_executed_per_sample = round(factor * train_flops_executed_per_sample(model))
        self.engines = {"model": build_engine(model, cfg.train, self.schedule.total_steps, self.info.world_size)}
        torch.manual_seed(cfg.seed * 1000 + self.info.rank)  # class dropout differs per rank
        self.loader = self.targets("train")
        if cfg.pyramid.uses_pyramid_shards:
            check_pyramids(self.loader, self.tokenizer_hash, list(cfg.tokenizer.patch_nums))
        self.objective = (RemaskObjective(self.engines["model"], self.stats, cfg.train.label_smoothing, self.codec,
                                          cfg.tokenizer.patch_nums, cfg.train.refine_replace) if remask else
                          TokenObjective(self.engines["model"], self.stats, cfg.train.label_smoothing, self.codec.head.loss))
        if self.info.is_main:
            save_config(cfg, self.run)

    def targets(self, split: str) -> Any:
        """This rank's (label_B, codes per scale) loader: pyramid shards or encoded images (pyramid.data)."""
        return codes_loader(self.cfg, self.codec, split, self.micro_batch, self.info.rank, self.info.world_size,
                            device=self.device)

    def counters(self, step: int) -> dict[str, Any]:
        samples = step * self.cfg.train.batch_size
        return {"step": step, "samples": samples, "tokens": samples * self.L,
                "flops": samples * self.flops_per_sample, "flops_executed": samples * self.flops_executed_per_sample}

    # ---- the harness hooks ---------------------------------------------------------------
    def begin(self, progress: Progress, log: Log) -> None:
        self.progress, self.start_step = progress, progress.step

    def batches(self) -> Iterator[Batch]:
        batches = model_batches(self.loader, self.codec, self.device)
        return self.recorded(batches) if self.cfg.train.debug_record else batches

    def recorded(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """``batches``, appending each micro-batch's samples [epoch, index, key] to
        ``<run>/debug/samples_rank<r>.jsonl`` with the step that takes it and where this rank runs
        (train.debug_record); a restarted job appends again from its ``start_step`` on (readers keep
        the latest job's records). ``node``: SLURM's node name under SLURM, else the host name."""
        path = self.run / "debug" / f"samples_rank{self.info.rank:05d}.jsonl"
        where = {"rank": self.info.rank, "local_rank": self.info.local_rank, "world_size": self.info.world_size,
                 "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname()}
        for batch in batches:
            append_jsonl(path, {"step": self.progress.step + 1, "start_step": self.start_step, **where,
                                "samples": self.loader.stream.last_samples})
            yield batch

    def loss(self, batch: Batch) -> StepLoss:
        return self.objective.loss(batch)

    def accumulate(self, out: StepLoss) -> None:
        self.objective.accumulate(out)

    def after_step(self, step: int) -> None:
        if step in self.snapshot_steps:  # every rank: the export is a collective under ZeRO-3
            self.export(snapshot_path(self.run, step), step)

    def export(self, path: Path, step: int) -> None:
        """The consolidated weights at ``step`` as a model.pt-format file (rank 0 writes)."""
        state_dict = consolidated_state_dict(self.engines["model"])
        if self.info.is_main:
            log.info("writing %s", save_model(path, state_dict, self.cfg, step, self.counters(step)["tokens"],
                                              self.tokenizer_hash))

    def record(self, window: Window) -> dict[str, Any]:
        draft = self.objective.record(self.device) if isinstance(self.objective, RemaskObjective) else {}
        return {**self.counters(window.step), **self.stats.reduce(self.device), **draft,
                "tokens_per_s": window.steps * self.cfg.train.batch_size * self.L / window.seconds}

    def validate(self, step: int) -> dict[str, Any]:
        # A fresh deterministic val stream each time: every pass scores the same batches, and
        # every rank runs the same number of forwards (ZeRO-3 gathers are collectives).
        stats = ScaleStats(self.cfg.tokenizer.patch_nums)
        out = evaluate(self.engines["model"], model_batches(self.targets("val"), self.codec, self.device), stats,
                       self.cfg.train.val_batches, self.device, self.codec.head.loss)
        return {"kind": "val", **self.counters(step), **out}

    def state_dict(self) -> dict[str, Any]:
        state = {"loader": self.loader.state_dict(), "stats": self.stats.sums_3K.clone()}
        if isinstance(self.objective, RemaskObjective):
            state["draft_stats"] = self.objective.draft_stats.sums_3K.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["loader"])
        self.stats.sums_3K = state["stats"]
        if isinstance(self.objective, RemaskObjective):
            self.objective.draft_stats.sums_3K = state["draft_stats"]

    def resized_state(self, saved: list[dict[str, Any]]) -> dict[str, Any]:
        """Resume on another number of ranks: the loader position is global (the same on every saved
        rank); the window's per-scale sums (``stats``, and the remask objective's ``draft_stats``) are
        partial sums that ``ScaleStats.reduce`` adds over ranks, so their total goes to rank 0 and
        zeros elsewhere."""
        positions = {tuple(sorted(s["loader"].items())) for s in saved}
        if len(positions) != 1:
            raise RuntimeError(f"the saved ranks disagree on the loader position: {sorted(positions)}")
        state = {"loader": saved[0]["loader"]}
        for key in saved[0].keys() - {"loader"}:
            total_3K = torch.stack([s[key] for s in saved]).sum(0)
            state[key] = total_3K if self.info.is_main else torch.zeros_like(total_3K)
        return state

    def finish(self, progress: Progress, log_record: Log) -> None:
        """Final val pass, model.pt and final.json (the sweep's runs table reads it)."""
        step = progress.step
        val = self.validate(step)
        log_record(val)
        if self.cfg.train.export_model:
            self.export(self.run / "model.pt", step)
        cfg = self.cfg
        final = {"status": "completed", "run": cfg.run_name, "size": cfg.model.size, "seed": cfg.seed,
                 "mask": cfg.model.mask, "attn_window": cfg.model.window, "pyramid": cfg.pyramid.cell,
                 "params": self.params, "non_embedding_params": self.non_embedding_params, **self.counters(step),
                 "val_loss": val["loss"], "val_loss_per_scale": val["loss_per_scale"],
                 "time_s": progress.time_s}
        if self.info.is_main:
            atomic_write_json(self.run / "final.json", final)


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    info = init_distributed()
    task = TransformerTask(cfg, info)
    Trainer(task, task.run, info, run_name=cfg.run_name,
            config=OmegaConf.to_container(OmegaConf.structured(cfg))).run()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Resumes automatically from <run>/checkpoints; see docs/training.md."
