"""Fit a form to a runs table, with seeded bootstrap intervals; the fit.json round trip.

The intervals are percentile bootstrap intervals: rows are resampled with
replacement (within each FLOP budget for ``isoflop``, so every resample still
has its budgets) and refitted; a resample whose fit fails is counted, not fatal.
When the table repeats a design point over training seeds (several rows with the
same fitted columns, e.g. ``--seeds`` runs of one size and budget), the resamples
draw seeds within each design point instead: every resample keeps the design, and
the interval is the spread the seeds' noise gives the fit (its seed variance).
Each resample starts from the full-data optimum plus its own best ``boot_starts``
grid points, which keeps 200 resamples cheap without trusting one start.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pretrain.config.fit import FitConfig
from analysis.scaling.forms import FORMS, Columns, FitSettings, Form, Params, budgets, isoflop_budgets
from analysis.scaling.table import RunsTable, RunsTableError, validate_frame

FIT_FORMAT = "srdd-fit-v1"


def column_map(cfg: FitConfig) -> dict[str, str]:
    """Logical inputs of cfg.form -> runs-table columns."""
    full = {"x": cfg.x, "N": cfg.n_column, "D": "tokens", "C": "flops"}
    return {k: full[k] for k in FORMS[cfg.form].columns}


@dataclass
class FitResult:
    form: str
    formula: str
    columns: dict[str, str]
    loss_column: str
    params: Params
    objective: float  # Huber/delta sum for the LSE forms, mean squared log-residual for the log-linear ones
    n_points: int
    intervals: dict[str, list[float]]
    samples: list[Params]  # successful bootstrap refits (kept so predictions get bands without refitting)
    bootstrap: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    budgets: list[dict[str, float]] = field(default_factory=list)  # isoflop only
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> Form:
        return FORMS[self.form]

    def predict(self, cols: Columns, params: Params | None = None) -> np.ndarray:
        if self.spec.predict is None:
            raise ValueError(f"form {self.form!r} does not predict the loss")
        return self.spec.predict(params or self.params, {k: np.asarray(v, dtype=float) for k, v in cols.items()})

    def predict_band(self, cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point prediction and the bootstrap interval at the fit's ci level (nan without resamples)."""
        mid = self.predict(cols)
        if not self.samples:
            nan = np.full_like(mid, np.nan)
            return mid, nan, nan
        preds = np.array([self.predict(cols, p) for p in self.samples])
        tail = 50 * (1 - self.bootstrap["ci"])
        lo, hi = np.percentile(preds, [tail, 100 - tail], axis=0)
        return mid, lo, hi

    def to_json(self) -> dict[str, Any]:
        return {"format": FIT_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "FitResult":
        if obj.get("format") != FIT_FORMAT:
            raise ValueError(f"not a {FIT_FORMAT} file (format={obj.get('format')!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


def _cols(table: RunsTable, cmap: dict[str, str], rows: np.ndarray | None = None) -> Columns:
    return {k: table.column(c) if rows is None else table.column(c)[rows] for k, c in cmap.items()}


def design_points(table: RunsTable, cmap: dict[str, str]) -> np.ndarray:
    """Group id per row: rows with equal fitted columns (one design point, e.g. the seeds of one size)."""
    keys = [tuple(np.round(np.log(table.column(c)), 9)) for c in cmap.values()]
    _, group = np.unique(np.array(keys).T, axis=0, return_inverse=True)
    return group.reshape(-1)


def _resample(rng: np.random.Generator, strata: np.ndarray) -> np.ndarray:
    """Row indices drawn with replacement inside each stratum (one stratum = a plain bootstrap)."""
    parts = [rng.choice(np.flatnonzero(strata == s), size=int((strata == s).sum()), replace=True)
             for s in np.unique(strata)]
    return np.sort(np.concatenate(parts))


def fit_table(table: RunsTable, cfg: FitConfig) -> FitResult:
    form = FORMS[cfg.form]
    cmap = column_map(cfg)
    cols, L = _cols(table, cmap), table.loss
    points = design_points(table, cmap)
    if len(np.unique(points)) < form.min_points:
        raise RunsTableError(f"{table.source}: {len(np.unique(points))} distinct design point(s) of {list(cmap.values())} "
                             f"but {form.name} has {form.min_points} parameters")
    grid = form.rank(cols, L, cfg.huber_delta, cfg.starts) if form.rank else None
    params, objective = form.fit(cols, L, FitSettings(cfg.huber_delta, grid=grid))

    replicated = len(np.unique(points)) < len(L)
    if replicated:  # seeds repeat the design: resample seeds within each design point
        strata = points
    else:
        strata = budgets(cols["C"]) if form.name == "isoflop" else np.zeros(len(L), dtype=int)
    rng = np.random.default_rng(cfg.seed)
    boot_settings = FitSettings(cfg.huber_delta, grid=None if grid is None else grid[:cfg.boot_starts], warm=params)
    samples: list[Params] = []
    failed = 0
    for _ in range(cfg.bootstrap):
        rows = _resample(rng, strata)
        if len(np.unique(points[rows])) < form.min_points:  # fewer distinct design points than parameters
            failed += 1
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rank-deficient polyfits on degenerate resamples: counted below
                p, _ = form.fit(_cols(table, cmap, rows), L[rows], boot_settings)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError):
            failed += 1
            continue
        if all(np.isfinite(v) for v in p.values()):
            samples.append(p)
        else:
            failed += 1
    tail = 50 * (1 - cfg.ci)
    intervals = {k: [float(v) for v in np.percentile([s[k] for s in samples], [tail, 100 - tail])]
                 for k in params} if samples else {}
    found = isoflop_budgets(cols, L) if form.name == "isoflop" else []
    return FitResult(
        form=form.name, formula=form.formula, columns=cmap, loss_column=table.loss_column, params=params,
        objective=objective, n_points=len(L), intervals=intervals, samples=samples,
        bootstrap={"resamples": cfg.bootstrap, "succeeded": len(samples), "failed": failed, "seed": cfg.seed, "ci": cfg.ci,
                   "over": "seeds within design points" if replicated else "rows"},
        skipped=table.skipped, budgets=[dataclasses.asdict(b) for b in found],
        settings={"huber_delta": cfg.huber_delta, "starts": cfg.starts, "boot_starts": cfg.boot_starts, "source": table.source},
    )


def fit_frame(frame: pd.DataFrame, cfg: FitConfig, source: str = "runs table") -> FitResult:
    """Validate ``frame`` for cfg.form and fit it (the API the report notebook uses)."""
    form = FORMS[cfg.form]
    table = validate_frame(frame, list(column_map(cfg).values()), source, cfg.loss_column, form.min_points)
    return fit_table(table, cfg)


def param_difference(a: FitResult, b: FitResult, name: str) -> tuple[float, float, float]:
    """(a's ``name`` - b's, and the percentile interval of the difference): the two fits' bootstrap
    resamples are independent, so resample i of one is paired with resample i of the other."""
    n = min(len(a.samples), len(b.samples))
    point = a.params[name] - b.params[name]
    if not n:
        return point, float("nan"), float("nan")
    diffs = [a.samples[i][name] - b.samples[i][name] for i in range(n)]
    tail = 50 * (1 - a.bootstrap["ci"])
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return point, float(lo), float(hi)
