"""``srdd ablate``: train every cell of the 2x2x2 Laplacian-pyramid grid, score it, write the table.

    srdd ablate model.size=d2 train.tokens=2000000 [--cells pixel-continuous-residual,...] [--fd-samples 500]

The cells, their scoring and the table are analysis/ablate.py (docs/ablation.md). Here each cell
is a training run (``<run_name>/ablation/<cell>``, one rank) brought to completion by the one
submit function (slurm/runs.py: one after another on this machine, or one job per cell with
``slurm.enabled=true`` / ``--cluster slurm``); completed cells are not retrained, so rerunning
completes an interrupted grid. Then every cell is sampled and scored: in this process, or as one
submitit array on the cluster.

Outputs in ``<SRDD_HOME>/<run_name>/ablation/``: ``<cell>/`` (the cell's training run),
``<cell>.png`` (one row per class), ``ablation.csv`` and ``ablation.json`` (rows + notes),
``config.yaml``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from analysis.ablate import cell_config, evaluate_cell, parse_cells, write_table
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import run_dir, save_config
from slurm.launch import plan
from slurm.runs import train_runs

log = logging.getLogger("srdd.ablate")


def cell_run_config(cfg: SRDDConfig, cell: str) -> SRDDConfig:
    """The cell's training run: one rank on one node (the grid's models are small), one GPU at most."""
    cell_cfg = cell_config(cfg, cell)
    s = cell_cfg.slurm
    s.nodes, s.ranks_per_node, s.gpus_per_node = 1, 1, min(plan(cell_cfg).gpus_per_node, 1)
    return cell_cfg


def score_cells(cfg: SRDDConfig, cells: Sequence[str], statuses: dict[str, str], n_per_class: int,
                fd_samples: int) -> list[dict[str, Any]]:
    """Every cell's table row: in this process, or one submitit array task per cell on SLURM."""
    args = [(cfg, cell, statuses[cell_config(cfg, cell).run_name], n_per_class, fd_samples) for cell in cells]
    if not cfg.slurm.enabled:
        return [evaluate_cell(*a) for a in args]
    from slurm.submit import JobsFailedError, make_executor, wait_all

    gpus = cell_run_config(cfg, cells[0]).slurm.gpus_per_node
    executor = make_executor(cfg, "srdd-ablate-eval", run_dir(cfg) / "ablation" / "submitit" / "%j", nodes=1,
                             tasks_per_node=1, gpus_per_node=gpus)
    jobs = executor.map_array(evaluate_cell, *zip(*args))
    try:
        return wait_all(jobs, timeout_s=60 * (cfg.slurm.time_min or 60))
    except JobsFailedError as err:
        log.error("%s", err)
        return [{"cell": cell, "status": "failed"} if job.job_id in err.failures else job.result()
                for cell, job in zip(cells, jobs)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cells", default="all", help="comma-separated space-codes-bands cells (default: all 8)")
    parser.add_argument("--n-per-class", type=int, default=4, help="images per class in each <cell>.png")
    parser.add_argument("--fd-samples", type=int, default=None, help="generated images for FD (default eval.n_samples; 0 = skip)")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                        help="slurm: one job per cell (slurm.launcher); local|debug: one after another on this "
                             "machine (default: slurm if slurm.enabled, else local)")
    parser.add_argument("--timeout-s", type=float, default=7 * 24 * 3600)


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.pyramid.codec import check_sampling

    cells = parse_cells(args.cells)
    for cell in cells:
        check_sampling(cell_config(cfg, cell))  # e.g. sample.refine with continuous codes: refused up front
    if any(c.startswith("latent") for c in cells):
        from pretrain.tokenizer import default_tokenizer_path

        if not Path(default_tokenizer_path(cfg)).is_file():
            raise ConfigError(f"tokenizer.ckpt: no tokenizer at {default_tokenizer_path(cfg)} for the latent cells; "
                              "train one (srdd tokenizer-train run_name=tokenizer) or pass --cells with pixel cells only")
    if args.cluster:
        cfg.slurm.enabled = args.cluster == "slurm"
    out_dir = run_dir(cfg) / "ablation"
    save_config(cfg, out_dir)
    fd_samples = cfg.eval.n_samples if args.fd_samples is None else args.fd_samples
    statuses = train_runs([cell_run_config(cfg, cell) for cell in cells], timeout_s=args.timeout_s)
    rows = score_cells(cfg, cells, statuses, args.n_per_class, fd_samples)
    notes = {"loss": "final_loss/val_loss_s<k>: validation loss per token; units differ by codes and space (loss_unit): "
                     "compare losses within a (space, codes) pair only, FD and samples across all cells",
             "flops": "sampling forward FLOPs per image (CFG doubles the rows); train flops: column flops_train",
             "latency_s": "wall seconds of one sample() call for latency_batch images on this machine",
             "fd": next((r["fd_note"] for r in rows if r.get("fd_note")), "FD with the eval area's feature network")}
    table = write_table(out_dir, rows, notes)
    done = sum(r.get("status") == "completed" for r in rows)
    print(f"{table}: {len(rows)} cells, {done} completed")
    print(json.dumps([{k: r.get(k) for k in ("cell", "final_loss", "fd", "latency_s")} for r in rows], indent=1))
    return 0 if done == len(rows) else 1
