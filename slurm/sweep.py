"""A scaling sweep: sizes x token budgets (or an isoFLOP grid) x masks x seeds, then the runs table.

    python slurm/sweep.py --name sweep1 --sizes d1 d2 --tokens 2e5 4e5 --masks var srdd
    srdd sweep --name sweep1 --sizes d1 d2 --tokens 2e5 4e5 --masks var srdd       # the same
    python slurm/sweep.py --name iso --sizes d1 d2 d3 --flops 1e11 3e11     # isoFLOP grid
    python slurm/sweep.py ... --seeds 0 1 2                                  # every cell at 3 seeds
    python slurm/sweep.py ... --cluster local train.batch_size=16           # no SLURM: subprocesses

Each run (``<name>/<size>-<mask>-<tokens>`` under SRDD_HOME, ``-seed<S>`` appended for a seed
other than 0; resumable) is submitted by the one
submit function (slurm/runs.py): on SLURM one job per run with the size's resources
(pretrain/sizes.py, ``slurm.*`` overrides; ``slurm.launcher``: a submitit job with one task per
rank, or ``sbatch slurm/train_size.sh``), else ``srdd train`` on this machine, one run after
another. With ``--flops C`` a size gets the token budget
``C / train_flops_per_token(size)``. When all jobs are final, ``<SRDD_HOME>/<name>/runs.csv``
lists every run (columns: analysis/runs_table.py; ``status`` from slurm.runs.run_status).
Completed runs are skipped, so rerunning the same command completes an interrupted sweep.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from analysis.runs_table import run_row, write_runs_csv
from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import ConfigError
from pretrain.outputs import run_dir
from slurm.launch import size_config
from slurm.runs import seeded_run_name, train_runs

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
         flops: Sequence[float], overrides: Sequence[str], seeds: Sequence[int] = (0,)) -> list[SRDDConfig]:
    """One config per run of the grid; tokens given directly or as C / flops_per_token. A run's
    seeds differ in ``seed`` (data order and init) and ``run_name`` only. An isoFLOP budget that
    whole optimizer steps would overshoot by more than ISOFLOP_SLACK is refused: the run would
    land at another compute than its budget's."""
    cfgs = []
    for size in sizes:
        for mask in masks:
            base = size_config(size, [*overrides, f"model.mask={mask}"])
            per_token = train_flops_per_token(base)
            budgets = [int(t) for t in tokens] or [int(c / per_token) for c in flops]
            for c in [] if tokens else flops:
                _check_isoflop_budget(base, size, c, per_token)
            for budget in budgets:
                for seed in seeds:
                    run = seeded_run_name(f"{name}/{size}-{mask}-{budget:.3g}".replace("+", ""), seed)
                    cfgs.append(size_config(size, [*overrides, f"model.mask={mask}", f"train.tokens={budget}",
                                                   f"seed={seed}", f"run_name={run}"]))
    return cfgs


ISOFLOP_SLACK = 0.1  # whole steps may spend up to 10% more than the budget


def _check_isoflop_budget(cfg: SRDDConfig, size: str, flops: float, per_token: float) -> None:
    from pretrain.train.budget import tokens_per_sample, total_steps

    L = tokens_per_sample(cfg.tokenizer.patch_nums)
    step_tokens = cfg.train.batch_size * L
    spent = total_steps(dataclasses.replace(cfg.train, tokens=int(flops / per_token)), L) * step_tokens * per_token
    if spent > (1 + ISOFLOP_SLACK) * flops:
        raise ConfigError(f"--flops {flops:.3g}: {size} trains in whole steps of {step_tokens} tokens "
                          f"(train.batch_size={cfg.train.batch_size}), {step_tokens * per_token:.3g} FLOPs each, so "
                          f"this budget would spend {spent / flops:.2f}x its FLOPs; raise the budget to at least "
                          f"{step_tokens * per_token / ISOFLOP_SLACK:.3g} or lower train.batch_size")


def run_sweep(cfgs: Sequence[SRDDConfig], table: Path, timeout_s: float, local_jobs: int = 1) -> list[dict[str, Any]]:
    """Bring every run to completion (slurm/runs.py: completed runs skipped, the others submitted;
    ``local_jobs`` local runs at a time), then write ``table``; returns its rows."""
    statuses = train_runs(cfgs, timeout_s=timeout_s, local_jobs=local_jobs)
    rows = [run_row(run_dir(cfg), statuses[cfg.run_name]) for cfg in cfgs]
    write_runs_csv(table, rows)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's flags (``srdd sweep`` and ``python slurm/sweep.py``). List values are read as
    strings: a key=value word that follows a list flag is an override (``route_overrides``)."""
    parser.add_argument("--name", default="sweep", help="sweep directory under SRDD_HOME (runs + runs.csv)")
    parser.add_argument("--sizes", nargs="+", required=True)
    parser.add_argument("--masks", nargs="+", default=["var"])
    parser.add_argument("--seeds", nargs="+", default=["0"],
                        help="training seeds of every cell (data order and init; run names get -seed<S> for S != 0)")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--tokens", nargs="+", help="token budgets per run")
    budget.add_argument("--flops", nargs="+", help="isoFLOP budgets (training FLOPs)")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                        help="slurm: one job per run (slurm.launcher); local|debug: one after another on this "
                             "machine (default: slurm if slurm.enabled=true else local)")
    parser.add_argument("--timeout-s", type=float, default=7 * 24 * 3600)
    parser.add_argument("--local-jobs", type=int, default=1,
                        help="local runs at a time, one thread each when > 1 (no SLURM; default: one after another)")


def route_overrides(args: argparse.Namespace) -> None:
    """Move key=value words a list flag swallowed (``--tokens 1e5 2e5 train.lr_peak=1e-3``) to
    ``args.overrides``, then give the lists their types."""
    for name in ("sizes", "masks", "seeds", "tokens", "flops"):
        values = getattr(args, name) or []
        args.overrides = [*args.overrides, *(v for v in values if "=" in v)]
        setattr(args, name, [v for v in values if "=" not in v])
    args.seeds = [int(s) for s in args.seeds]
    args.tokens, args.flops = [float(t) for t in args.tokens], [float(c) for c in args.flops]


def main(cfg_or_argv: SRDDConfig | Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """``srdd sweep`` (the CLI hands ``cfg, args``) or ``python slurm/sweep.py`` / ``main(argv)``."""
    if args is None:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(parser)
        parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, anywhere on the line")
        argv = list(sys.argv[1:] if cfg_or_argv is None else cfg_or_argv)
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    route_overrides(args)
    if args.cluster:
        args.overrides.append(f"slurm.enabled={str(args.cluster == 'slurm').lower()}")
    cfgs = grid(args.name, args.sizes, args.masks, args.tokens, args.flops, args.overrides, args.seeds)
    table = home_dir() / args.name / "runs.csv"
    rows = run_sweep(cfgs, table, args.timeout_s, args.local_jobs)
    done = sum(r["status"] == "completed" for r in rows)
    print(f"{table}: {len(rows)} runs, {done} completed")
    return 0 if done == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
