"""The 2x2x2 Laplacian-pyramid grid (Hong & Belkadi, arXiv 2510.02826): cells, their scores, the table.

Every cell (pyramid.space x pyramid.codes x pyramid.bands) is a training run of ``srdd train``
(the same DeepSpeed loop, metrics and checkpoints) on the same image shards, seen in the same
order (``pyramid.data=images``: every cell encodes the images on the fly), with the same model
size, batch and token budget (every cell has L = sum(pn^2) tokens per image); cells differ only
in their targets, the transformer's input width and its head (docs/ablation.md). This module
defines the cells (``cell_config``), samples and scores a trained cell (``evaluate_cell``: a
class grid, sampling latency and FLOPs, FD against the val split with the eval area's feature
network), writes ``ablation.csv`` / ``ablation.json`` and compares the levers with the paper.
``srdd ablate`` (training every cell, then scoring it) is slurm/ablate.py.
"""
from __future__ import annotations

import csv
import io
import itertools
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_write_json, atomic_write_text, run_dir

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


# ---- one cell: sample and score its trained run -----------------------------------------------
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


def evaluate_cell(cfg: SRDDConfig, cell: str, status: str, n_per_class: int, fd_samples: int) -> dict[str, Any]:
    """The cell's table row (``status``: its run's, slurm.runs.run_status); writes ``<cell>.png``
    when the run has its model. ``cfg`` supplies sample.* and eval.*. Picklable for submitit."""
    import torch

    from analysis.evaluate import fd_scorer
    from analysis.runs_table import run_row
    from pretrain.sampling.batches import class_labels
    from pretrain.sampling.save import grid, to_uint8, write_png

    cell_cfg = cell_config(cfg, cell)
    run = run_dir(cell_cfg)
    trained = run_row(run, status)
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


# ---- the table ---------------------------------------------------------------------------------
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
