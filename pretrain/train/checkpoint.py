"""Training checkpoints: ``<run>/checkpoints/step_XXXXXXXX/``, complete or absent. The one format
of every task on the harness (pretrain/train/trainer.py).

Layout of one checkpoint::

    step_00000100/
      ds/                 the main engine's DeepSpeed files (model, optimizer, scheduler; ZeRO shards per rank)
      ds_<name>/          each further engine's (e.g. ds_disc/: the tokenizer's PatchGAN discriminator)
      rank_00000.pt ...   per-rank RNG states and the task's state (data-loader position, running sums)
      meta.json           step, time, world size, the config keys a resume must match, metrics records written
      complete            written last: only directories holding it are ever resumed from
      universal/          added by the first resume on another world size (pretrain/train/elastic.py)

Every rank writes into ``.step_XXXXXXXX.tmp/``; after a barrier rank 0 renames it into place
and writes ``complete``. A job killed half way leaves a ``.tmp`` directory that is ignored and
cleared by the next save, never a checkpoint that looks whole.
"""
from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import DistInfo
from pretrain.outputs import atomic_write_json, atomic_write_text
from pretrain.train import elastic

log = logging.getLogger("srdd.train")

_STEP_DIR = re.compile(r"^step_(\d{8})$")
DS_TAG = "ds"
MARKER = "complete"


def frozen_keys(cfg: SRDDConfig) -> dict[str, Any]:
    """Config values a checkpoint is bound to: change one and the saved tensors no longer fit (or
    the run would silently become another run). The world size is not one of them: a checkpoint
    resumes on any number of ranks that divides the global batch (pretrain/train/elastic.py)."""
    keys = {
        "model.size": cfg.model.size,
        "model.attn_window": cfg.model.window,  # the resolved mask: var -> None, srdd -> 0
        "model.num_classes": cfg.model.num_classes,
        "model.mlp_ratio": cfg.model.mlp_ratio,
        "tokenizer.vocab_size": cfg.tokenizer.vocab_size,
        "tokenizer.z_channels": cfg.tokenizer.z_channels,
        "tokenizer.patch_nums": list(cfg.tokenizer.patch_nums),
        "pyramid.space": cfg.pyramid.space,
        "pyramid.codes": cfg.pyramid.codes,
        "pyramid.bands": cfg.pyramid.bands,
        "pyramid.pixel_levels": cfg.pyramid.pixel_levels,
        "train.batch_size": cfg.train.batch_size,
        "train.zero_stage": cfg.train.zero_stage,
        "train.precision": cfg.train.precision,
    }
    if cfg.train.refine_objective != "off":  # only then: checkpoints from before the key still resume
        keys["train.refine_objective"] = cfg.train.refine_objective
    return keys


def check_compatible(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to resume when a frozen key differs; the message names every differing key."""
    diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} != config {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"cannot resume from {where}: {detail}. Use another run_name to start a new run.")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def engine_tags(engines: dict[str, Any]) -> list[str]:
    """``ds`` for the main (first) engine, ``ds_<name>`` for the others."""
    return [DS_TAG if i == 0 else f"{DS_TAG}_{name}" for i, name in enumerate(engines)]


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "meta.json").read_text())


class CheckpointManager:
    """Save / find / load / prune the checkpoints of one run. All ranks call save and load."""

    def __init__(self, root: Path, info: DistInfo, keep_last: int, milestones: Sequence[int] = ()):
        self.root = Path(root)
        self.info = info
        self.keep_last = keep_last
        self.milestones = set(milestones)

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:08d}"

    def complete(self) -> list[tuple[int, Path]]:
        """(step, dir) of every complete checkpoint, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir()
                 if (m := _STEP_DIR.match(p.name)) and (p / MARKER).is_file()]
        return sorted(found)

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1][1] if done else None

    def save(self, engines: dict[str, Any], step: int, meta: dict[str, Any], rank_state: dict[str, Any]) -> Path:
        meta = {**meta, "world_size": self.info.world_size}
        final = self.path(step)
        tmp = self.root / f".{final.name}.tmp"
        if self.info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        for tag, engine in zip(engine_tags(engines), engines.values()):
            engine.save_checkpoint(str(tmp), tag=tag, save_latest=False)
        torch.save({"rng": rng_state(), **rank_state}, tmp / f"rank_{self.info.rank:05d}.pt")
        dist.barrier()
        if self.info.is_main:
            atomic_write_json(tmp / "meta.json", meta)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete one from a killed save
            tmp.rename(final)
            atomic_write_text(final / MARKER, f"{step}\n")
            log.info("checkpoint %s written by %d ranks", final, self.info.world_size)
            self.prune()
        dist.barrier()
        return final

    def load(self, engines: dict[str, Any], path: Path,
             resized_state: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore the engines (model, optimizer, scheduler) and this rank's RNG; return (meta, rank_state).

        Written by another number of ranks (meta ``world_size``): partitioned optimizer states go
        through DeepSpeed's universal format, this rank's state is ``resized_state(every saved
        rank's state)`` and its RNG is derived anew (pretrain/train/elastic.py)."""
        meta = read_meta(path)
        saved_world = int(meta.get("world_size", meta["frozen"].get("world_size", self.info.world_size)))
        resized = saved_world != self.info.world_size
        tags = engine_tags(engines)
        sharded = [tag for tag in tags if resized and elastic.partitioned(path / tag)]
        universal = elastic.ensure_universal(path, sharded, self.info) if sharded else None
        for tag, engine in zip(tags, engines.values()):
            if tag in sharded:
                elastic.load_universal(engine, universal, tag)
            elif engine.load_checkpoint(str(path), tag=tag, load_optimizer_states=True,
                                        load_lr_scheduler_states=True)[0] is None:
                raise RuntimeError(f"DeepSpeed could not load the checkpoint in {path / tag}")
        if not resized:
            rank_state = torch.load(path / f"rank_{self.info.rank:05d}.pt", weights_only=False)
            set_rng_state(rank_state.pop("rng"))
            return meta, rank_state
        saved = [torch.load(path / f"rank_{r:05d}.pt", weights_only=False) for r in range(saved_world)]
        elastic.reseed(saved[0]["rng"], self.info.rank)
        log.info("resumed %s, written by %d ranks, on %d ranks", path.name, saved_world, self.info.world_size)
        return meta, resized_state([{k: v for k, v in s.items() if k != "rng"} for s in saved])

    def prune(self) -> None:
        """Keep the newest ``keep_last`` plus milestones (rank 0 only, after the new one is complete)."""
        done = self.complete()
        for step, path in done[:-self.keep_last]:
            if step not in self.milestones:
                shutil.rmtree(path, ignore_errors=True)
