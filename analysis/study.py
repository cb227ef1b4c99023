"""A study directory read for comparisons: every training run by (size, mask, seed), its validation
curve and its evaluation, and the comparisons the report and the claims table make from them, each
a mean over seeds with its 95% t interval, paired by seed where the runs share one
(analysis/intervals.py; docs/claims.md).

    DIR/runs.csv                 one row per run: size, mask, seed, params, tokens, flops, flops_executed, fd, ...
    DIR/<run>/metrics.jsonl      ``val`` records (tokens, flops, flops_executed, loss) = the curve;
                                 the last ``eval`` record (FD-<net>, class_acc-<net>, fd_by_scales, ...);
                                 ``eval_curve`` records (`srdd eval --snapshots`) = the FD curve

Two FLOP columns (docs/model.md): ``flops`` counts attended (query, key) pairs only, ``flops_executed``
what the attention path computes. Every function taking ``x`` says which one it uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from analysis.intervals import mean_ci, paired_ci, welch_ci
from pretrain.outputs import read_jsonl
from pretrain.sizes import SIZES

FLOP_COLUMNS = {"flops": "attended FLOPs (keys the mask allows)", "flops_executed": "executed FLOPs (what the kernels run)"}


@dataclass
class Run:
    name: str
    size: str
    mask: str
    seed: int
    params: float
    tokens: float
    flops: float
    flops_executed: float
    val_loss: float
    curve: pd.DataFrame  # val records: step, tokens, flops, flops_executed, loss
    eval: dict[str, Any] = field(default_factory=dict)  # the last eval record
    fd_curve: pd.DataFrame = field(default_factory=pd.DataFrame)  # eval_curve records: step, tokens, flops, flops_executed, fd

    @property
    def fd_metric(self) -> Optional[str]:
        """The eval's FD key: ``FD-<net>`` (``FID-<net>`` for an Inception feature network)."""
        net = self.eval.get("feature_net", {}).get("name")
        keys = (f"FD-{net}", f"FID-{net}") if net else tuple(k for k in self.eval if k.startswith("FD-"))
        return next((k for k in keys if k in self.eval), None)

    def metric(self, name: str) -> Optional[float]:
        """``val_loss``, ``fd``, ``class_acc`` or ``fid_inception`` of this run (None: not evaluated)."""
        if name == "val_loss":
            return self.val_loss if math.isfinite(self.val_loss) else None
        if name == "fd":
            key = self.fd_metric
        elif name == "class_acc":
            key = next((k for k in self.eval if k.startswith("class_acc-")), None)
        elif name == "fid_inception":  # the packaged TF-Inception FID beside the feature network's FD (evaluate.py)
            key = f"FID-{self.eval['fid_network']['name']}" if "fid_network" in self.eval else None
        else:
            raise KeyError(f"unknown metric {name!r}")
        return self.eval.get(key) if key else None


def _num(value: Any, default: float = math.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(out) else out


def load_runs(root: str | Path) -> list[Run]:
    """Completed runs of ``root/runs.csv`` with their curves and last eval record ([] without the table)."""
    root = Path(root)
    path = root / "runs.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    if "status" in table.columns:
        table = table[table["status"].fillna("completed").astype(str).isin(["completed", "done", "ok", ""])]
    runs = []
    for row in table.to_dict("records"):
        records = read_jsonl(root / str(row["run"]) / "metrics.jsonl")
        val = pd.DataFrame([r for r in records if r.get("kind") == "val"])
        if len(val) and "flops_executed" not in val:
            val["flops_executed"] = val["flops"]
        evals = [r for r in records if r.get("kind") == "eval"]
        flops = _num(row.get("flops"))
        runs.append(Run(name=str(row["run"]), size=str(row["size"]), mask=str(row["mask"]),
                        seed=int(_num(row.get("seed"), 0.0)), params=_num(row.get("params")),
                        tokens=_num(row.get("tokens")), flops=flops,
                        flops_executed=_num(row.get("flops_executed"), flops), val_loss=_num(row.get("val_loss")),
                        curve=val.drop_duplicates("step", keep="last").sort_values("step") if len(val) else val,
                        eval=evals[-1] if evals else {}, fd_curve=fd_curve(records)))
    return runs


def fd_curve(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The ``eval_curve`` records of the latest `srdd eval --snapshots` (its feature network's FD as
    ``fd``), one row per step; empty when the run's snapshots were never scored."""
    points = [r for r in records if r.get("kind") == "eval_curve"]
    if not points:
        return pd.DataFrame()
    net = points[-1]["feature_net"]["name"]
    key = next(k for k in (f"FD-{net}", f"FID-{net}") if k in points[-1])
    rows = [{**{c: r[c] for c in ("step", "tokens", "flops", "flops_executed")}, "fd": r[key]}
            for r in points if r["feature_net"]["name"] == net and key in r]
    return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step")


def depth(size: str) -> int:
    return SIZES[size].depth if size in SIZES else 0


def sizes_of(runs: Sequence[Run]) -> list[str]:
    """Sizes present, smallest first."""
    return sorted({r.size for r in runs}, key=lambda s: (depth(s), s))


def cell(runs: Sequence[Run], size: str, mask: str) -> list[Run]:
    """The seeds of one (size, mask), by seed."""
    return sorted((r for r in runs if r.size == size and r.mask == mask), key=lambda r: r.seed)


def values_of(cell_runs: Sequence[Run], metric: str) -> list[float]:
    """``metric`` of every run of a cell that has it."""
    return [v for v in (r.metric(metric) for r in cell_runs) if v is not None and np.isfinite(v)]


def cell_interval(cell_runs: Sequence[Run], metric: str) -> Optional[tuple[float, float, float, int]]:
    """(mean over seeds, low, high, n_seeds) of ``metric`` in one cell (None when no run has it)."""
    values = values_of(cell_runs, metric)
    return (*mean_ci(values), len(values)) if values else None


def summary(runs: Sequence[Run], metrics: Sequence[str] = ("val_loss", "fd", "class_acc", "fid_inception")) -> pd.DataFrame:
    """Per (size, mask): n_seeds and each metric's mean with its 95% interval over seeds."""
    rows = []
    for size in sizes_of(runs):
        for mask in sorted({r.mask for r in runs}):
            c = cell(runs, size, mask)
            if not c:
                continue
            row: dict[str, Any] = {"size": size, "mask": mask, "params": c[0].params, "n_seeds": len(c)}
            for m in metrics:
                got = cell_interval(c, m)
                if got is not None:
                    row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = got[:3]
            rows.append(row)
    return pd.DataFrame(rows)


def paired(runs: Sequence[Run], size: str) -> list[tuple[Run, Run]]:
    """(var, srdd) runs of one size that share a seed (same data order and init)."""
    var = {r.seed: r for r in cell(runs, size, "var")}
    return [(var[r.seed], r) for r in cell(runs, size, "srdd") if r.seed in var]


def largest_paired_size(runs: Sequence[Run]) -> Optional[str]:
    """The largest size with a var and an srdd run of the same seed, preferring the most seeds."""
    sizes = [s for s in sizes_of(runs) if paired(runs, s)]
    return max(sizes, key=lambda s: (len(paired(runs, s)), depth(s))) if sizes else None


# ---- curves ------------------------------------------------------------------------------------
def value_at(curve: pd.DataFrame, x: str, at: float) -> float:
    """The val loss at ``at`` of column ``x``, interpolated linearly in log x between val records."""
    xs, ys = curve[x].to_numpy(dtype=float), curve["loss"].to_numpy(dtype=float)
    if not len(xs) or at < xs[0] * (1 - 1e-9) or at > xs[-1] * (1 + 1e-9):
        return math.nan
    return float(np.interp(np.log(at), np.log(xs), ys))


def first_reach(curve: pd.DataFrame, x: str, threshold: float, y: str = "loss") -> float:
    """The first ``x`` at which column ``y`` (lower is better) reaches ``threshold``, linear between
    records (the first record's ``x`` when it is already there; nan: never)."""
    xs, ys = curve[x].to_numpy(dtype=float), curve[y].to_numpy(dtype=float)
    for i, y in enumerate(ys):
        if y <= threshold:
            if i == 0:
                return float(xs[0])
            x0, x1, y0 = xs[i - 1], xs[i], ys[i - 1]
            return float(x0 + (x1 - x0) * (y0 - threshold) / (y0 - y))
    return math.nan


@dataclass
class Comparison:
    """One VAR-vs-SRDD comparison: per-side means, delta = var - srdd (lower is better: positive = SRDD wins)."""

    var: float
    srdd: float
    delta: float
    ci_low: float
    ci_high: float
    n_seeds: int
    detail: str = ""


def _compare(var_vals: Sequence[float], srdd_vals: Sequence[float], detail: str = "") -> Optional[Comparison]:
    """VAR - SRDD over the seeds where both sides are finite, paired seed by seed."""
    keep = [i for i, (a, b) in enumerate(zip(var_vals, srdd_vals)) if np.isfinite(a) and np.isfinite(b)]
    if not keep:
        return None
    a, b = [var_vals[i] for i in keep], [srdd_vals[i] for i in keep]
    delta, lo, hi = paired_ci(a, b)
    return Comparison(float(np.mean(a)), float(np.mean(b)), delta, lo, hi, len(keep), detail)


def equal_compute_loss(runs: Sequence[Run], size: str, x: str = "flops") -> Optional[Comparison]:
    """Val loss of VAR and SRDD at the same training FLOPs ``x`` (attended or executed): per seed,
    both curves read at C* = the smaller of the two runs' final FLOPs (interpolated in log C)."""
    var_l, srdd_l, at = [], [], []
    for v, s in paired(runs, size):
        if not len(v.curve) or not len(s.curve):
            continue
        c = min(v.curve[x].iloc[-1], s.curve[x].iloc[-1])
        var_l.append(value_at(v.curve, x, c))
        srdd_l.append(value_at(s.curve, x, c))
        at.append(c)
    return _compare(var_l, srdd_l, detail=f"at {np.mean(at):.3g} {x}" if at else "")


def equal_tokens(runs: Sequence[Run], size: str, metric: str) -> Optional[Comparison]:
    """``metric`` (fd, fid_inception, val_loss) of VAR and SRDD trained on the same tokens (paired by seed)."""
    pairs = [(v.metric(metric), s.metric(metric)) for v, s in paired(runs, size)]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None
    return _compare([a for a, _ in pairs], [b for _, b in pairs])


CURVES = {"loss": ("curve", "val loss"), "fd": ("fd_curve", "FD")}  # y of a convergence: (Run attribute, label)


def convergence_threshold(runs: Sequence[Run], size: str, fraction: float = 1.0, y: str = "loss") -> float:
    """A level of ``y`` every run of ``size`` reaches: its first record minus ``fraction`` of the
    way down to the worst (highest) final value among the size's runs (1.0 = that final value)."""
    curves = [getattr(r, CURVES[y][0]) for r in runs if r.size == size and len(getattr(r, CURVES[y][0]))]
    start = max(float(c[y].iloc[0]) for c in curves)
    worst_final = max(float(c[y].iloc[-1]) for c in curves)
    return start - fraction * (start - worst_final)


def convergence(runs: Sequence[Run], size: str, x: str = "tokens", fraction: float = 1.0,
                y: str = "loss") -> Optional[Comparison]:
    """``x`` (tokens, flops or flops_executed) each mask needs for ``y`` (``loss``: the val curve;
    ``fd``: the snapshots' FD curve) to reach the size's threshold (``convergence_threshold``);
    delta = var - srdd (positive: SRDD gets there sooner)."""
    attr, label = CURVES[y]
    pairs = [(v, s) for v, s in paired(runs, size) if len(getattr(v, attr)) and len(getattr(s, attr))]
    if not pairs:
        return None
    thr = convergence_threshold(runs, size, fraction, y)
    reach = lambda run: first_reach(getattr(run, attr), x, thr, y)  # noqa: E731
    return _compare([reach(v) for v, _ in pairs], [reach(s) for _, s in pairs], detail=f"{label} <= {thr:.4g}")


def size_trend(runs: Sequence[Run], mask: str, metric: str = "fd") -> list[dict[str, Any]]:
    """Per consecutive pair of sizes of one mask: mean(smaller) - mean(larger) with its interval
    (positive: the metric falls with size), Welch's t (the sizes' seeds are independent runs)."""
    out = []
    sizes = [s for s in sizes_of(runs) if cell(runs, s, mask)]
    for small, large in zip(sizes, sizes[1:]):
        a, b = values_of(cell(runs, small, mask), metric), values_of(cell(runs, large, mask), metric)
        if not a or not b:
            continue
        delta, lo, hi = welch_ci(a, b)
        out.append({"mask": mask, "smaller": small, "larger": large, "metric": metric, "decrease": delta,
                    "ci_low": lo, "ci_high": hi, "falls": lo > 0})
    return out


def fd_by_scales(cell_runs: Sequence[Run]) -> pd.DataFrame:
    """FD against the number of scales decoded (the eval's ``fd_by_scales``), mean over seeds with intervals."""
    per_seed = [r.eval.get("fd_by_scales") for r in cell_runs if r.eval.get("fd_by_scales")]
    if not per_seed:
        return pd.DataFrame()
    rows = []
    for k in range(len(per_seed[0])):
        mean, lo, hi = mean_ci([p[k]["fd"] for p in per_seed])
        rows.append({"scales": per_seed[0][k]["scales"], "fd": mean, "fd_ci_low": lo, "fd_ci_high": hi,
                     "n_seeds": len(per_seed)})
    return pd.DataFrame(rows)


def coarse_to_fine_gain(cell_runs: Sequence[Run], k: int) -> Optional[tuple[float, float, float, int]]:
    """Share of the FD improvement from 1 scale to all K that the first ``k`` scales reach,
    (FD_1 - FD_k) / (FD_1 - FD_K), per seed, then its mean over seeds with the t interval."""
    values = []
    for r in cell_runs:
        rows = r.eval.get("fd_by_scales")
        if not rows or k > len(rows):
            continue
        first, at, full = rows[0]["fd"], rows[k - 1]["fd"], rows[-1]["fd"]
        if first > full:  # else no improvement to share out
            values.append((first - at) / (first - full))
    return (*mean_ci(values), len(values)) if values else None
