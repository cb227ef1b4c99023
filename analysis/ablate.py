"""``srdd ablate``: the 2x2x2 Laplacian-pyramid grid (Hong & Belkadi, arXiv 2510.02826).

    srdd ablate model.size=d2 train.tokens=2000000 [--cells pixel-continuous-residual,...] [--fd-samples 500]

Every cell (pyramid.space x pyramid.codes x pyramid.bands) trains with ``srdd train`` (the same
DeepSpeed loop, metrics and checkpoints) on the same image shards, seen in the same order
(``pyramid.data=images``: every cell encodes the images on the fly), with the same model size,
batch and token budget (every cell has L = sum(pn^2) tokens per image); cells differ only in
their targets, the transformer's input width and its head (docs/ablation.md). Then each cell
is sampled: a class grid, sampling latency and FLOPs, and FD against the val split with the
eval area's feature network (empty when `srdd eval-net-train` has not been run).

Outputs in ``<SRDD_HOME>/<run_name>/ablation/``: ``<cell>/`` (the cell's training run),
``<cell>.png`` (one row per class), ``ablation.csv`` and ``ablation.json`` (rows + notes),
``config.yaml``. Finished cells are not retrained, so rerunning completes an interrupted grid.
With ``slurm.enabled=true`` (or ``--cluster``) each cell is one submitit job.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_write_json, atomic_write_text, run_dir, save_config

log = logging.getLogger("srdd.ablate")

CELLS = tuple("-".join(c) for c in itertools.product(("latent", "pixel"), ("discrete", "continuous"),
                                                     ("residual", "absolute")))
COLUMNS = ["cell", "space", "codes", "bands", "params", "non_embedding_params", "tokens", "final_loss", "loss_unit",
           "train_loss", "latency_s", "flops", "flops_train", "fd", "fd_metric", "fd_note", "status"]
LOSS_UNITS = {("latent", "discrete"): "nats/token (CE over the VQ codebook)",
              ("pixel", "discrete"): "nats/value (CE over pyramid.pixel_levels, mean over 3p^2 values)",
              ("latent", "continuous"): "nats/value (Gaussian NLL, mean over Cvae values)",
              ("pixel", "continuous"): "nats/value (Gaussian NLL, mean over 3p^2 values)"}


def cell_config(cfg: SRDDConfig, cell: str) -> SRDDConfig:
    """``cfg`` with the cell's levers, image-shard targets and run name ``<run_name>/ablation/<cell>``."""
    from pretrain.train.export import config_from_dict

    space, codes, bands = cell.split("-")
    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    container["pyramid"].update(space=space, codes=codes, bands=bands, data="images")
    container["run_name"] = f"{cfg.run_name}/ablation/{cell}"
    return config_from_dict(container)


def parse_cells(text: str) -> list[str]:
    cells = [c.strip() for c in text.split(",") if c.strip()] if text != "all" else list(CELLS)
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise ConfigError(f"--cells {text}: unknown cell(s) {bad}; cells are space-codes-bands, e.g. {CELLS[0]}")
    return cells


# ---- one cell: train, then sample and score -----------------------------------------------------
def train_cell(cell_cfg: SRDDConfig) -> None:
    """``srdd train`` for the cell (a finished run is left as it is)."""
    from pretrain.train.loop import main as train_main

    if not (run_dir(cell_cfg) / "final.json").exists():
        train_main(cell_cfg, argparse.Namespace())


def load_cell(run: Path) -> tuple[Any, Any, SRDDConfig]:
    """(model, codec, the run's config) of a trained cell."""
    from pretrain.pyramid.codec import load_codec
    from pretrain.train.export import load_model

    model, run_cfg, _ = load_model(run / "model.pt")
    return model, load_codec(run_cfg), run_cfg


def sample_images(model: Any, codec: Any, labels_N: Any, cfg: SRDDConfig) -> tuple[Any, int]:
    """(images for ``labels_N`` with the ``sample.*`` settings, their sampling FLOPs)."""
    import torch

    from pretrain.sampling.batches import sample_in_batches

    stats: dict[str, Any] = {}
    images = [img for img, _ in sample_in_batches(model, codec, labels_N, cfg.sample, stats=stats)]
    return torch.cat(images), stats["flops"]


def fd_scorer(cfg: SRDDConfig) -> tuple[Any, str]:
    """(callable images -> FD, metric name) with the eval area's feature network, or (None, why not)."""
    from analysis.evaluate import val_reference
    from analysis.metrics import frechet_distance_from_stats, gaussian_stats
    from analysis.metrics.networks import load_feature_net

    try:
        net = load_feature_net(cfg.eval, cfg.data.source)
    except ConfigError as err:
        return None, f"FD not computed: {err}"
    ref = val_reference(cfg, net, cfg.eval.batch_size)

    def score(img_N3HW: Any) -> float:
        feats_ND, _ = net.extract(img_N3HW.split(cfg.eval.batch_size))
        return frechet_distance_from_stats(gaussian_stats(feats_ND, "generated"), ref.stats)

    return score, net.metric("FD")


def evaluate_cell(cfg: SRDDConfig, cell: str, n_per_class: int, fd_samples: int) -> dict[str, Any]:
    """The cell's table row; writes ``<cell>.png``. ``cfg`` supplies sample.* and eval.*."""
    import torch

    from pretrain.sampling.batches import class_labels
    from pretrain.sampling.save import grid, to_uint8, write_png
    from pretrain.train.runs_table import run_row

    cell_cfg = cell_config(cfg, cell)
    run = run_dir(cell_cfg)
    trained = run_row(run)
    row: dict[str, Any] = {"cell": cell, "space": cell_cfg.pyramid.space, "codes": cell_cfg.pyramid.codes,
                           "bands": cell_cfg.pyramid.bands,
                           "loss_unit": LOSS_UNITS[(cell_cfg.pyramid.space, cell_cfg.pyramid.codes)],
                           **{k: v for k, v in trained.items() if k not in ("run", "size", "mask", "flops")},
                           "flops_train": trained["flops"]}
    row["final_loss"] = row.pop("val_loss")
    if not (run / "model.pt").is_file():
        return row
    model, codec, run_cfg = load_cell(run)
    num_classes = model.num_classes
    labels = class_labels([], n_per_class * num_classes, num_classes)
    with torch.no_grad():
        t0 = time.perf_counter()
        img, flops = sample_images(model, codec, labels, cfg)
        calls = -(-len(labels) // cfg.sample.batch_size)
        row["latency_s"] = (time.perf_counter() - t0) / calls  # one sample() call of sample.batch_size images
        row["flops"] = flops / len(labels)  # sampling forward FLOPs per image (CFG rows included)
        write_png(run.parent / f"{cell}.png", grid(to_uint8(img), n_per_class))
        score, fd_metric = fd_scorer(run_cfg) if fd_samples > 0 else (None, "FD not computed: --fd-samples 0")
        row["fd"] = score(sample_images(model, codec, class_labels([], fd_samples, num_classes), cfg)[0]) if score else ""
    row["fd_metric" if score else "fd_note"] = fd_metric
    return row


def cell_job(cfg_dict: dict[str, Any], cell: str, srdd_home: str, n_per_class: int, fd_samples: int) -> dict[str, Any]:
    """Body of one submitit job (or one in-process step): train the cell, then evaluate it."""
    os.environ["SRDD_HOME"] = srdd_home
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pretrain.train.export import config_from_dict

    cfg = config_from_dict(cfg_dict)
    train_cell(cell_config(cfg, cell))
    return evaluate_cell(cfg, cell, n_per_class, fd_samples)


# ---- the grid -----------------------------------------------------------------------------------
def run_grid(cfg: SRDDConfig, cells: Sequence[str], cluster: str | None, n_per_class: int, fd_samples: int,
             timeout_s: float) -> list[dict[str, Any]]:
    """Rows of every cell: in this process one after another, or one submitit job per cell."""
    cfg_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
    home = str(home_dir().resolve())
    if cluster is None:
        return [cell_job(cfg_dict, cell, home, n_per_class, fd_samples) for cell in cells]
    from slurm.submit import JobsFailedError, make_executor, wait_all

    from pretrain.train.launch import plan

    out_dir = run_dir(cfg) / "ablation"
    jobs = []
    for cell in cells:
        p = plan(cell_config(cfg, cell))  # one rank per cell: the grid is small; wall time from the size table
        executor = make_executor(cfg, f"srdd-ablate-{cell}", out_dir / "submitit" / "%j", cluster=cluster,
                                 nodes=1, tasks_per_node=1, gpus_per_node=min(p.gpus_per_node, 1), timeout_min=p.time_min)
        jobs.append(executor.submit(cell_job, cfg_dict, cell, home, n_per_class, fd_samples))
        log.info("submitted %s as job %s", cell, jobs[-1].job_id)
    try:
        return wait_all(jobs, timeout_s=timeout_s)
    except JobsFailedError as err:
        log.error("%s", err)
        failed = {job.job_id for job in jobs if job.job_id in err.failures}
        return [{"cell": cell, "status": "failed"} if job.job_id in failed else job.result()
                for cell, job in zip(cells, jobs)]


def write_table(out_dir: Path, rows: list[dict[str, Any]], notes: dict[str, Any]) -> Path:
    """``ablation.csv`` (one row per cell: COLUMNS, then val_loss_s<k>, then any others) and ``ablation.json``."""
    seen = list(dict.fromkeys(k for r in rows for k in r))
    scales = sorted((k for k in seen if k.startswith("val_loss_s")), key=lambda k: int(k[10:]))
    columns = [c for c in COLUMNS if c in seen] + scales + [k for k in seen if k not in COLUMNS and k not in scales]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "ablation.csv", buf.getvalue())
    atomic_write_json(out_dir / "ablation.json", {"rows": rows, "notes": notes})
    return out_dir / "ablation.csv"


LEVERS = {"space": ("latent", "pixel"), "codes": ("discrete", "continuous"), "bands": ("residual", "absolute")}


def lever_effects(table: Any, metrics: Sequence[str] = ("fd", "final_loss", "latency_s", "flops")) -> Any:
    """Per lever and metric: the mean over matched pairs (cells equal in the other two levers) of
    metric(first setting) - metric(second setting), e.g. FD(latent) - FD(pixel), and how many of the
    pairs the first setting wins (lower is better for every metric here). Losses are compared only
    where a pair shares its loss unit (the bands lever). Rows with no complete pair are left out."""
    import pandas as pd

    out: list[dict[str, Any]] = []
    if not set(LEVERS) <= set(table.columns):
        return pd.DataFrame(out)
    for lever, (a, b) in LEVERS.items():
        others = [k for k in LEVERS if k != lever]
        for metric in metrics:
            if metric not in table or (metric == "final_loss" and lever != "bands"):
                continue
            vals = pd.to_numeric(table[metric], errors="coerce")
            frame = table.assign(_v=vals).pivot_table(index=others, columns=lever, values="_v")
            if a not in frame or b not in frame:
                continue
            diff = (frame[a] - frame[b]).dropna()
            if len(diff):
                out.append({"lever": lever, "metric": metric, "difference": f"{a} - {b}", "mean": diff.mean(),
                            "pairs": len(diff), "first_wins": int((diff < 0).sum())})
    return pd.DataFrame(out)


# Direction each lever took in Hong & Belkadi (arXiv 2510.02826, MNIST ablations; docs/ablation.md):
# the setting they found better.
PAPER_BETTER = {"space": ("latent", "latent refinement lowers error faster than pixel refinement"),
                "codes": ("discrete", "classification over code indices beats continuous regression"),
                "bands": ("residual", "a few coarse-to-fine residual (frequency-band) steps capture most of the gain")}


def paper_comparison(effects: Any, metric: str = "fd") -> list[str]:
    """One sentence per lever: the direction this grid measured on ``metric`` vs the paper's."""
    lines = []
    for lever, (better, claim) in PAPER_BETTER.items():
        hit = effects[(effects["lever"] == lever) & (effects["metric"] == metric)] if len(effects) else effects
        if not len(hit):
            lines.append(f"{lever}: no complete pair of cells with {metric}; paper: {claim}.")
            continue
        r = hit.iloc[0]
        a, b = LEVERS[lever]
        ours = a if r["mean"] < 0 else b
        verdict = "agrees" if ours == better else "disagrees"
        spread = "consistent" if r["first_wins"] in (0, r["pairs"]) else "mixed"  # do all pairs point the same way?
        lines.append(f"{lever}: {metric} {r['difference']} = {r['mean']:.4g} (mean of {r['pairs']} pairs, {spread}: {a} "
                     f"lower in {r['first_wins']}) -> {ours} better here; paper: {claim} -> {verdict}.")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cells", default="all", help="comma-separated space-codes-bands cells (default: all 8)")
    parser.add_argument("--n-per-class", type=int, default=4, help="images per class in each <cell>.png")
    parser.add_argument("--fd-samples", type=int, default=None, help="generated images for FD (default eval.n_samples; 0 = skip)")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                        help="submitit: one job per cell (default: slurm if slurm.enabled, else cells run in this process)")
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
    out_dir = run_dir(cfg) / "ablation"
    save_config(cfg, out_dir)
    cluster = args.cluster or ("slurm" if cfg.slurm.enabled else None)
    fd_samples = cfg.eval.n_samples if args.fd_samples is None else args.fd_samples
    rows = run_grid(cfg, cells, cluster, args.n_per_class, fd_samples, args.timeout_s)
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
