"""The teacher's samples, generated once into pyramid shards: what trajectory distillation learns from.

The teacher samples on its own full schedule with the ``sample.*`` settings of the `srdd distill`
command (its guidance, truncation and refinement as configured), and each sample's token pyramid
(the teacher's codes, on the teacher's schedule) is stored in the pyramid-shard format
(data_pipeline/pyramid_shards/format.py, docs/data.md), so ``PyramidLoader`` streams them like
data pyramids, with the same exact resume. Sample i has label i mod classes; the samples of a
``sample.batch_size`` chunk starting at i are drawn with seed ``sample.seed + i`` (the val split
continues the numbering after the train split), so every shard's bytes are a function of the
teacher and the settings alone.

Restart safety is the pyramid precompute's (data_pipeline/pyramid_shards/precompute.py): each
shard is written atomically, then its manifest; a rerun skips shards whose manifest matches the
identity and whose bytes are intact, and ``manifest.json`` is written once all are. Ranks split
the shards (``shards[rank::world]``) and meet at a barrier. The directory defaults to
``<teacher run>/teacher_samples/n<N>-<hash>`` (hash of the identity), so students of the same
teacher and settings share one set; a directory is never mixed (``check_directory``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from data_pipeline.files import file_sha256
from data_pipeline.pyramid_shards.format import FORMAT, pack, token_dtype
from data_pipeline.pyramid_shards.precompute import (MANIFEST, check_directory, finalize, shard_complete,
                                                     shard_manifest_path, write_shard)
from data_pipeline.image_shards.write import Tally

log = logging.getLogger("srdd.distill")
SHARD_SIZE = 256  # samples per shard: the unit of resume
SAMPLER_KEYS = ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "seed", "refine", "refine_rounds",
                "p_resample", "refine_depth", "refine_scales", "policy_ckpt", "batch_size")


def val_count(n_train: int) -> int:
    """Held-out teacher samples beside ``n_train`` (a tenth, at least one): the distilled student's val split."""
    return max(1, math.ceil(n_train / 10))


def identity(teacher_run: Path, tokenizer_sha256: str, teacher: Any, sample_cfg: Any, n_train: int) -> dict[str, Any]:
    """What makes two teacher-sample shards interchangeable (manifest keys; a mismatch is refused)."""
    sampler = {k: getattr(sample_cfg, k) for k in SAMPLER_KEYS}
    sampler["refine_scales"] = list(sampler["refine_scales"])
    return {"format": FORMAT, "kind": "teacher-samples", "teacher_sha256": file_sha256(teacher_run / "model.pt"),
            "tokenizer_sha256": tokenizer_sha256, "patch_nums": list(teacher.patch_nums),
            "vocab_size": int(teacher.V), "token_dtype": token_dtype(teacher.V).name, "sampler": sampler,
            "n_train": n_train, "n_val": val_count(n_train), "shard_size": SHARD_SIZE}


def default_directory(teacher_run: Path, ident: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return teacher_run / "teacher_samples" / f"n{ident['n_train']}-{digest}"


def shard_plan(n_train: int, n_val: int) -> list[tuple[str, int, int]]:
    """(shard name, first sample index, samples) for the train shards, then the val shards."""
    plan = []
    for split, first, n in (("train", 0, n_train), ("val", n_train, n_val)):
        for s, start in enumerate(range(first, first + n, SHARD_SIZE)):
            plan.append((f"{split}-{s:06d}.tar", start, min(SHARD_SIZE, first + n - start)))
    return plan


@torch.no_grad()
def generate_shard(teacher: Any, vae: Any, sample_cfg: Any, start: int, count: int, dtype: np.dtype
                   ) -> tuple[list[tuple[str, dict[str, bytes]]], int]:
    """The samples ``start .. start+count-1`` packed as pyramid-shard samples, and their sampling FLOPs."""
    from pretrain.sampling.batches import sample_in_batches

    label_N = torch.arange(start, start + count) % teacher.num_classes
    cfg = copy.deepcopy(sample_cfg)
    cfg.seed = sample_cfg.seed + start
    stats: dict[str, Any] = {}
    samples = []
    i = start
    for _, pyramid in sample_in_batches(teacher, vae, label_N, cfg, stats=stats):
        tokens_BL = torch.cat(pyramid, 1).cpu().numpy().astype(dtype)
        for tokens_L in tokens_BL:
            samples.append((f"{i:08d}", pack(int(label_N[i - start]), tokens_L[None], {"index": i})))
            i += 1
    return samples, int(stats.get("flops", 0))


def ensure_teacher_samples(teacher: Any, vae: Any, teacher_run: Path, tokenizer_sha256: str, sample_cfg: Any,
                           n_train: int, out: Path | None, rank: int = 0, world_size: int = 1) -> Path:
    """Generate what is missing of the teacher-sample directory (this rank's shards), wait for every
    rank, and return the directory once its ``manifest.json`` exists."""
    ident = identity(teacher_run, tokenizer_sha256, teacher, sample_cfg, n_train)
    out = Path(out) if out else default_directory(teacher_run, ident)
    out.mkdir(parents=True, exist_ok=True)
    check_directory(out, ident)
    plan = shard_plan(n_train, ident["n_val"])
    dtype = np.dtype(ident["token_dtype"])
    fields = {**ident, "input": "model.pt", "input_sha256": ident["teacher_sha256"], **Tally().manifest_fields()}
    for name, start, count in plan[rank::world_size]:
        if shard_complete(out, name, ident) is not None:
            continue
        samples, flops = generate_shard(teacher, vae, sample_cfg, start, count, dtype)
        write_shard(out, name, samples, {**fields, "sampling_flops": flops})
        log.info("teacher samples: wrote %s (%d samples) in %s", name, count, out)
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        classes = {"num_classes": int(teacher.num_classes)}
        if finalize(out, [name for name, _, _ in plan], ident, classes) is None:
            raise RuntimeError(f"teacher samples in {out} incomplete after generation")
    if dist.is_initialized():
        dist.barrier()
    return out


def sampling_flops(directory: Path) -> int:
    """Forward FLOPs the teacher spent generating every shard of ``directory`` (train and val)."""
    total = json.loads((directory / MANIFEST).read_text())
    return sum(json.loads(shard_manifest_path(directory, s["output"]).read_text())["sampling_flops"]
               for s in total["shards"])
