"""A scaling sweep: sizes x token budgets (or an isoFLOP grid) x masks, then the runs table.

    python slurm/sweep.py --name sweep1 --sizes d1 d2 --tokens 2e5 4e5 --masks var srdd
    python slurm/sweep.py --name iso --sizes d1 d2 d3 --flops 1e11 3e11     # isoFLOP grid
    python slurm/sweep.py ... --cluster local train.batch_size=16           # no SLURM: subprocesses

Each run trains with ``srdd train`` semantics (run ``<name>/<size>-<mask>-<tokens>`` under
SRDD_HOME, resumable) as one submitit job with the size's resources (pretrain/sizes.py,
``slurm.*`` overrides), one task per rank. With ``--flops C`` a size gets the token budget
``C / train_flops_per_token(size)``. When all jobs are final, ``<SRDD_HOME>/<name>/runs.csv``
lists every run (columns: pretrain/train/runs_table.py). Finished runs are skipped, so
rerunning the same command completes an interrupted sweep.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from pretrain.config import SRDDConfig, home_dir
from pretrain.train.launch import plan, size_config
from pretrain.train.runs_table import run_row, write_runs_csv

log = logging.getLogger("srdd.sweep")


def train_flops_per_token(cfg: SRDDConfig) -> float:
    """Training FLOPs per token of cfg's size/mask, from a model built on the meta device."""
    import torch

    from pretrain.model import build_model
    from pretrain.model.flops import train_flops_per_sample
    from pretrain.train.budget import tokens_per_sample

    tok = cfg.tokenizer
    with torch.device("meta"):
        model = build_model(cfg.model, tok.vocab_size, tok.z_channels, tok.patch_nums)
    return train_flops_per_sample(model) / tokens_per_sample(tok.patch_nums)


def grid(name: str, sizes: Sequence[str], masks: Sequence[str], tokens: Sequence[float],
         flops: Sequence[float], overrides: Sequence[str]) -> list[SRDDConfig]:
    """One config per run of the grid; tokens given directly or as C / flops_per_token."""
    cfgs = []
    for size in sizes:
        for mask in masks:
            base = size_config(size, [*overrides, f"model.mask={mask}"])
            budgets = [int(t) for t in tokens] or [int(c / train_flops_per_token(base)) for c in flops]
            for budget in budgets:
                run = f"{name}/{size}-{mask}-{budget:.3g}".replace("+", "")
                cfgs.append(size_config(size, [*overrides, f"model.mask={mask}", f"train.tokens={budget}",
                                               f"run_name={run}"]))
    return cfgs


def train_job(cfg_dict: dict[str, Any], srdd_home: str) -> dict[str, Any]:
    """Body of one submitit job (runs in every task = rank): env -> srdd train -> its table row."""
    os.environ["SRDD_HOME"] = srdd_home
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import submitit

    if "RANK" not in os.environ:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    from pretrain.train.export import config_from_dict
    from pretrain.train.loop import main

    cfg = config_from_dict(cfg_dict)
    main(cfg, argparse.Namespace())
    return run_row(home_dir() / cfg.run_name)


def run_sweep(cfgs: Sequence[SRDDConfig], table: Path, cluster: str | None, timeout_s: float,
              poll_s: float = 2.0) -> list[dict[str, Any]]:
    """Submit the unfinished runs, wait for all, write ``table``; returns its rows."""
    from slurm.submit import job_succeeded, make_executor

    home = str(home_dir().resolve())
    jobs = []
    for cfg in cfgs:
        if (home_dir() / cfg.run_name / "final.json").exists():
            continue
        p = plan(cfg)
        executor = make_executor(cfg, f"srdd-{cfg.run_name.replace('/', '-')}", table.parent / "submitit" / "%j",
                                 cluster=cluster, nodes=p.nodes, gpus_per_node=p.gpus_per_node,
                                 tasks_per_node=p.ranks_per_node, timeout_min=p.time_min)
        job = executor.submit(train_job, OmegaConf.to_container(OmegaConf.structured(cfg)), home)
        log.info("submitted %s as job %s", cfg.run_name, job.job_id)
        jobs.append((cfg.run_name, job))
    # Not slurm.submit.wait_all: it reads job.result(), which submitit refuses for multi-task
    # (multi-rank) jobs. A run's outcome is on disk anyway (final.json); the job state names failures.
    deadline = time.monotonic() + timeout_s
    while not all(job.done() for _, job in jobs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep unfinished after {timeout_s:.0f} s: " +
                               ", ".join(f"{run} ({job.state})" for run, job in jobs if not job.done()))
        time.sleep(poll_s)
    statuses = {run: "failed" for run, job in jobs if not job_succeeded(job) and not (home_dir() / run / "final.json").exists()}
    rows = [run_row(home_dir() / cfg.run_name, statuses.get(cfg.run_name)) for cfg in cfgs]
    write_runs_csv(table, rows)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="sweep", help="sweep directory under SRDD_HOME (runs + runs.csv)")
    parser.add_argument("--sizes", nargs="+", required=True)
    parser.add_argument("--masks", nargs="+", default=["var"])
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--tokens", nargs="+", type=float, default=[], help="token budgets per run")
    budget.add_argument("--flops", nargs="+", type=float, default=[], help="isoFLOP budgets (training FLOPs)")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                        help="default: slurm if slurm.enabled=true else local")
    parser.add_argument("--timeout-s", type=float, default=7 * 24 * 3600)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, anywhere on the line")
    argv = list(sys.argv[1:] if argv is None else argv)
    # key=value words may follow a list flag (--tokens 1e5 2e5 train.lr_peak=1e-3): route them first.
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfgs = grid(args.name, args.sizes, args.masks, args.tokens, args.flops, args.overrides)
    table = home_dir() / args.name / "runs.csv"
    rows = run_sweep(cfgs, table, args.cluster, args.timeout_s)
    done = sum(r["status"] == "completed" for r in rows)
    print(f"{table}: {len(rows)} runs, {done} completed")
    return 0 if done == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
