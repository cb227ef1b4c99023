"""``srdd pyramids``: the pyramid precompute, in this process or as one SLURM job array.

    srdd pyramids --shards DIR --tokenizer CKPT --out DIR                    # every shard, here
    srdd pyramids ... slurm.enabled=true slurm.array_tasks=8                 # 8 submitit array tasks

The per-shard work is data_pipeline/pyramid_shards/precompute.py (``run_slice``: task i of N
encodes shards i, i+N, ...; restart-safe and idempotent, docs/data.md); this module only decides where the
slices run. On SLURM the array goes through the same executor plumbing as every other
submitted job (slurm/submit.py) and the stage waits for it; the task that completes the set
writes ``manifest.json``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from data_pipeline.pyramid_shards import precompute
from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import ConfigError

log = logging.getLogger("srdd.pyramids")

add_arguments = precompute.add_arguments


def submit_array(cfg: SRDDConfig, pattern: str, tokenizer_path: str, out: str) -> list[dict[str, Any]]:
    """One submitit job array of ``slurm.array_tasks`` tasks (at most one per input shard), each
    precomputing its slice; returns the tasks' counts once all are done."""
    from slurm.submit import make_executor, wait_all

    n = min(cfg.slurm.array_tasks, len(precompute.input_shards(pattern)))
    folder = Path(cfg.slurm.log_dir or home_dir() / "slurm_logs") / "pyramids-%j"
    executor = make_executor(cfg, "pyramids", folder, tasks_per_node=1, nodes=1, gpus_per_node=0)
    jobs = executor.map_array(precompute.run_slice, [cfg] * n, [pattern] * n, [tokenizer_path] * n, [out] * n,
                              range(n), [n] * n)
    log.info("submitted %d pyramid tasks: %s", n, ", ".join(j.job_id for j in jobs))
    return wait_all(jobs, timeout_s=60 * (cfg.slurm.time_min or 60))


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    if not cfg.slurm.enabled:
        return precompute.main(cfg, args)
    if getattr(args, "task_count", 1) != 1:
        raise ConfigError("--task-index/--task-count pick one slice in this process; with slurm.enabled=true "
                          "the array has slurm.array_tasks tasks")
    pattern, tok, out = precompute.resolve_inputs(cfg, args)
    log.info(precompute.summary(submit_array(cfg, pattern, tok, out), out))
    return 0
