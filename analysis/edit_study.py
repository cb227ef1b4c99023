"""`srdd edit-study --runs VAR_RUN,SRDD_RUN`: zero-shot reconstruction scored, VAR against SRDD
(docs/sampling.md, "Edit study").

Each run (the VAR and SRDD models of one size and budget) edits the same ``--n`` held-out images
(the first n of the val split) with `srdd edit`'s procedure (pretrain/sampling/edit.py: only the
known pixels are tokenised), for every edit mask, with and without refinement, at ``--seeds``
seeds. Edit masks (the ``mask`` column; ``task`` is the `srdd edit` task):

- ``centre`` (inpaint): the box 0.25..0.75 of the side is hidden;
- ``random`` (inpaint): one box per image, side 0.3..0.6 of the image, anywhere inside it, drawn
  from the seed;
- ``half`` (outpaint): the left half is known, the right half generated;
- ``x2`` / ``x4`` (superres): the image at 1/2 or 1/4 of its side is known.

Refinement: ``refine`` is ``none`` or the ``--refine`` value, with the other ``sample.refine_*``
settings as configured (whatever pretrain/sampling/batches.py's ``build_refiner`` makes of them).

Per seed, over the n edited images against the originals: ``psnr_known`` (PSNR, as the
tokenizer's val PSNR: of the MSE pooled over the known pixels, [-1, 1] images on the [0, 1]
scale; for superres the known information is the low-resolution image, so it compares the
edited image's area-downsampled version with it), ``psnr_all`` (over all pixels), ``lpips_all``
(LPIPS-alex of the whole image, mean over images) and ``fd`` (FD of the edited images against the
val split with the eval feature network). The sampling seed and the random boxes change with
the seed; the images do not, so VAR and SRDD are compared on identical inputs.

Outputs in ``--out`` (default the first run's parent): ``edits.csv`` (``model, mask, task,
refine, psnr_known, psnr_all, lpips_all, fd``, each metric's ``<metric>_ci_low`` /
``<metric>_ci_high`` (95% t interval over seeds), ``n_seeds``, then ``run``, ``fd_metric``),
``edits_seeds.csv`` (the per-seed values) and ``edits_compare.csv`` (``compare``: SRDD minus VAR
per seed, signed so that a positive value means SRDD reconstructs better, with its interval and
verdict).
"""
from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F

from analysis.intervals import mean_ci, verdict
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_write_text

log = logging.getLogger("srdd.edit_study")
MASKS = {"centre": "inpaint", "random": "inpaint", "half": "outpaint", "x2": "superres", "x4": "superres"}
METRICS = {"psnr_known": 1, "psnr_all": 1, "lpips_all": -1, "fd": -1}  # +1: higher is better
COLUMNS = ["model", "mask", "task", "refine", *[c for m in METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high")],
           "n_seeds", "run", "fd_metric"]
CENTRE = (0.25, 0.25, 0.75, 0.75)
HALF = (0.0, 0.0, 0.5, 1.0)


def random_boxes(B: int, side: int, seed: int, lo: float = 0.3, hi: float = 0.6) -> torch.Tensor:
    """(B, 1, side, side) True inside one random square box per image (side lo..hi of the image)."""
    gen = torch.Generator().manual_seed(seed)
    inside = torch.zeros(B, 1, side, side, dtype=torch.bool)
    for b in range(B):
        w = int(round(side * (lo + (hi - lo) * float(torch.rand((), generator=gen)))))
        x0, y0 = (int(torch.randint(0, side - w + 1, (), generator=gen)) for _ in range(2))
        inside[b, :, y0:y0 + w, x0:x0 + w] = True
    return inside


def known_region(mask: str, B: int, side: int, seed: int) -> torch.Tensor | None:
    """Known pixels of an inpaint/outpaint mask; None for superres (its knowledge is the low-res image)."""
    from pretrain.sampling.edit import box_mask

    if mask == "centre":
        return ~box_mask(side, CENTRE, B)
    if mask == "random":
        return ~random_boxes(B, side, seed)
    if mask == "half":
        return box_mask(side, HALF, B)
    return None


def superres_factor(mask: str) -> int:
    return int(mask[1:])


def psnr(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor, where_B1HW: torch.Tensor | None = None) -> float:
    """PSNR of the MSE pooled over the pixels ``where`` holds (all when None), the tokenizer's convention."""
    from pretrain.tokenizer.train import psnr_db

    err = (x_B3HW.float() - y_B3HW.float()).square()
    if where_B1HW is None:
        return psnr_db(float(err.mean()))
    w = where_B1HW.expand_as(err).float()
    return psnr_db(float((err * w).sum() / w.sum().clamp_min(1)))


def reconstruction_metrics(original: torch.Tensor, edited: torch.Tensor, mask: str, known_B1HW: torch.Tensor | None,
                           lpips: Any, fd: Callable[[torch.Tensor], float]) -> dict[str, float]:
    """The four metrics of one seed's edited images (module docstring)."""
    if known_B1HW is None:  # superres: the known information is the image at side / factor
        f = superres_factor(mask)
        psnr_known = psnr(F.avg_pool2d(edited, f), F.avg_pool2d(original, f))
    else:
        psnr_known = psnr(edited, original, known_B1HW)
    with torch.no_grad():
        lp = float(lpips(edited.float(), original.float()).mean())
    return {"psnr_known": psnr_known, "psnr_all": psnr(edited, original), "lpips_all": lp, "fd": fd(edited)}


@torch.no_grad()
def edit_seed(model: Any, vae: Any, img: torch.Tensor, label: torch.Tensor, mask: str, refine: str,
              sample_cfg: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(edited images, known pixels) of one mask, refinement and seed."""
    from pretrain.sampling.batches import build_refiner
    from pretrain.sampling.edit import edit

    s = copy.deepcopy(sample_cfg)
    s.seed, s.refine = seed, refine
    task = MASKS[mask]
    known = known_region(mask, len(img), img.shape[-1], seed)
    if task == "superres":
        s.superres_factor = superres_factor(mask)
    edited, _, _ = edit(model, vae, img, label, task, s, build_refiner(s, model), known)
    return edited, known


def compare(seeds: pd.DataFrame) -> pd.DataFrame:
    """SRDD minus VAR per (mask, refine, metric), paired by seed, signed so that positive = SRDD better."""
    rows = []
    for (mask, refine), group in seeds.groupby(["mask", "refine"], sort=False):
        by_model = {m: g.sort_values("seed").reset_index(drop=True) for m, g in group.groupby("model")}
        if not {"var", "srdd"} <= by_model.keys():
            continue
        for metric, sign in METRICS.items():
            delta = sign * (by_model["srdd"][metric] - by_model["var"][metric])
            m, lo, hi = mean_ci(delta)
            rows.append({"mask": mask, "task": MASKS[mask], "refine": refine, "metric": metric,
                         "srdd_minus_var_signed": m, "ci_low": lo, "ci_high": hi, "n_seeds": len(delta),
                         "verdict": verdict(lo, hi, "srdd better", "var better")})
    return pd.DataFrame(rows)


def summarise(seeds: pd.DataFrame, fd_metric: str) -> pd.DataFrame:
    rows = []
    for (model, mask, refine, run), group in seeds.groupby(["model", "mask", "refine", "run"], sort=False):
        row: dict[str, Any] = {"model": model, "mask": mask, "task": MASKS[mask], "refine": refine}
        for metric in METRICS:
            row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = mean_ci(group[metric])
        rows.append({**row, "n_seeds": len(group), "run": run, "fd_metric": fd_metric})
    return pd.DataFrame(rows, columns=COLUMNS)


def run_study(cfg: SRDDConfig, runs: list[str], masks: list[str], refines: list[str], n: int, seeds: int,
              out: Path) -> pd.DataFrame:
    from analysis.evaluate import fd_scorer
    from pretrain.sampling.edit import source_images
    from pretrain.sampling.load import load_for_sampling
    from pretrain.tokenizer.lpips import load_lpips

    if seeds < 2:
        raise ConfigError(f"--seeds {seeds}: an interval needs at least 2 seeds (the study asks for >= 3)")
    fd, fd_metric = fd_scorer(cfg)
    if fd is None:
        raise ConfigError(fd_metric)
    lpips = load_lpips("alex", key="edit-study (LPIPS-alex)")
    img, label = source_images(cfg, n)
    rows = []
    for run in runs:
        model, vae, run_path, run_cfg = load_for_sampling(run)
        for mask in masks:
            for refine in refines:
                for s in range(seeds):
                    seed = cfg.sample.seed + 100_003 * s
                    edited, known = edit_seed(model, vae, img, label, mask, refine, cfg.sample, seed)
                    rows.append({"model": run_cfg.model.mask, "mask": mask, "refine": refine, "seed": s,
                                 "run": str(run_path), **reconstruction_metrics(img, edited, mask, known, lpips, fd)})
                    log.info("edit study: %s", rows[-1])
    per_seed = pd.DataFrame(rows)
    table = summarise(per_seed, fd_metric)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "edits_seeds.csv", per_seed.to_csv(index=False))
    atomic_write_text(out / "edits_compare.csv", compare(per_seed).to_csv(index=False))
    atomic_write_text(out / "edits.csv", table.to_csv(index=False))  # last: its presence means the study is complete
    return table


def parse_list(text: str, allowed: Any, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ConfigError(f"{flag} {text}: unknown {bad}; choose from {sorted(allowed)}")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True, help="comma-separated runs to compare (the VAR and SRDD models of one size and budget)")
    parser.add_argument("--masks", default=",".join(MASKS), help=f"edit masks, from {','.join(MASKS)}")
    parser.add_argument("--refine", default="sr", help="the refinement of the `refine` rows (sample.refine value; none = only unrefined rows)")
    parser.add_argument("--n", type=int, default=64, help="held-out images edited per run, mask, refinement and seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="output directory (default: the first run's parent)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.config import load_config
    from pretrain.sampling.load import resolve_run

    runs = [r for r in args.runs.split(",") if r]
    if not runs:
        raise ConfigError("--runs: give at least one run")
    masks = parse_list(args.masks, MASKS, "--masks")
    load_config(overrides=[f"sample.refine={args.refine}"])  # an unknown value fails here, naming sample.refine
    refines = ["none"] if args.refine == "none" else ["none", args.refine]
    out = Path(args.out) if args.out else resolve_run(runs[0]).parent
    table = run_study(cfg, runs, masks, refines, args.n, args.seeds, out)
    print(table[["model", "mask", "refine", *METRICS]].to_string(index=False))
    verdicts = pd.read_csv(out / "edits_compare.csv")
    if len(verdicts):
        print(verdicts[["mask", "refine", "metric", "srdd_minus_var_signed", "ci_low", "ci_high", "verdict"]].to_string(index=False))
        counts = verdicts["verdict"].value_counts()
        print(f"zero-shot reconstruction, SRDD vs VAR over {len(verdicts)} comparisons: "
              f"{counts.get('srdd better', 0)} SRDD better, {counts.get('var better', 0)} VAR better, "
              f"{counts.get('inconclusive', 0)} inconclusive -> {out / 'edits.csv'}")
    return 0


def report_section(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, str] | None:
    """(edits.csv, edits_compare.csv, the verdict line) of a study directory for the report; None when not run."""
    path, comp = Path(root) / "edits.csv", Path(root) / "edits_compare.csv"
    if not path.is_file() or not comp.is_file():
        return None
    table, compared = pd.read_csv(path), pd.read_csv(comp)
    counts = compared["verdict"].value_counts() if len(compared) else pd.Series(dtype=int)
    better, worse = int(counts.get("srdd better", 0)), int(counts.get("var better", 0))
    claim = ("reproduced" if better and not worse else "contradicted" if worse and not better
             else "mixed" if better and worse else "inconclusive")
    line = (f"SRDD's claim of better zero-shot reconstruction than VAR: **{claim}** here - of {len(compared)} "
            f"paired comparisons (mask x refinement x metric, SRDD minus VAR over seeds), {better} favour SRDD and "
            f"{worse} favour VAR beyond their 95% intervals; {len(compared) - better - worse} are inconclusive.")
    return table, compared, line
