"""`srdd fit --runs runs.csv --form FORM --out fit.json`: a scaling-law fit with bootstrap intervals and plots.

Flags override the ``fit`` config section (``fit.form=...`` dotlist overrides work too).
Outputs beside fit.json: ``<stem>_curve.{png,svg}`` and ``<stem>_residuals.{png,svg}``
(or ``<stem>_isoflop.{png,svg}``) and the resolved ``config.yaml``.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from pretrain.config.fit import FORMS, FitConfig
from analysis.scaling.fit import FitResult, column_map, fit_table
from analysis.scaling.forms import FORMS as FORM_SPECS
from analysis.scaling.plots import save_fit_plots
from analysis.scaling.table import RunsTableError, read_runs, validate_frame
from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import validate_dataclass
from pretrain.outputs import atomic_write_json, save_config

log = logging.getLogger("srdd.fit")

# flag -> FitConfig field
_FLAGS = {"runs": "runs", "form": "form", "x": "x", "loss_column": "loss_column", "bootstrap": "bootstrap", "seed": "seed"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", help="runs table CSV (fit.runs)")
    parser.add_argument("--form", choices=FORMS, help="fit.form")
    parser.add_argument("--x", choices=("params", "non_embedding_params", "flops", "tokens"), help="fit.x (power forms)")
    parser.add_argument("--loss-column", dest="loss_column", help="fit.loss_column")
    parser.add_argument("--bootstrap", type=int, help="fit.bootstrap resamples")
    parser.add_argument("--seed", type=int, help="fit.seed")
    parser.add_argument("--out", help="fit.json path (default: beside the runs table, fit_<form>.json)")


def fit_config(cfg: SRDDConfig, args: argparse.Namespace) -> FitConfig:
    """The ``fit`` section (defaults while SRDDConfig has none), overridden by the flags, validated."""
    base = getattr(cfg, "fit", None) or FitConfig()
    given = {field: getattr(args, flag) for flag, field in _FLAGS.items() if getattr(args, flag, None) is not None}
    out = dataclasses.replace(base, **given)
    validate_dataclass(out, prefix="fit.")
    return out


def fit_to_files(runs: Path, fcfg: FitConfig, out: Path) -> tuple[FitResult, list[Path]]:
    """Fit ``runs`` (a runs table CSV) with ``fcfg``; write ``out`` (fit.json) and its plots beside it.
    Raises RunsTableError / FloatingPointError when the table cannot be fitted with that form."""
    t0 = time.perf_counter()
    table = validate_frame(read_runs(runs), list(column_map(fcfg).values()), str(runs), fcfg.loss_column,
                           FORM_SPECS[fcfg.form].min_points)
    result = fit_table(table, fcfg)
    for note in table.skipped:
        log.warning("skipped %s", note)
    payload = result.to_json()
    payload["time_s"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out, payload)
    return result, save_fit_plots(result, table, out.with_suffix(""))


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    fcfg = fit_config(cfg, args)
    runs = Path(fcfg.runs) if fcfg.runs else home_dir() / "runs.csv"
    out = Path(args.out) if getattr(args, "out", None) else runs.parent / f"fit_{fcfg.form.replace('+', '_')}.json"
    try:
        result, plots = fit_to_files(runs, fcfg, out)
    except (RunsTableError, FloatingPointError) as e:
        print(f"srdd fit: {e}", file=sys.stderr)
        return 2
    save_config(cfg, out.parent)
    print(f"{result.form}: {result.formula}  ({result.n_points} points, "
          f"{result.bootstrap['succeeded']}/{result.bootstrap['resamples']} bootstrap fits)")
    for name, value in result.params.items():
        lo, hi = result.intervals.get(name, (float("nan"), float("nan")))
        print(f"  {name:>6} = {value:.6g}   [{lo:.6g}, {hi:.6g}]")
    print(f"wrote {out} and {len(plots)} plot files")
    return 0
