"""Figures of a fit: data + fitted curve + bootstrap band, residuals, isoFLOP curves.

Saved figures are bare ``matplotlib.figure.Figure`` objects (no pyplot, so no GUI
backend and no global state: rendered by Agg/SVG canvases); the ``*_axes``
functions draw on any axes, e.g. the report notebook's inline ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.scaling.fit import FitResult
from analysis.scaling.forms import budgets
from analysis.scaling.table import RunsTable
from pretrain.outputs import atomic_path


def _grid(v: np.ndarray, n: int = 100) -> np.ndarray:
    return np.logspace(np.log10(v.min()) - 0.1, np.log10(v.max()) + 0.3, n)


def curve_axes(ax: Axes, fit: FitResult, table: RunsTable, label: str = "") -> None:
    """Observed L against the fit's main variable, the fitted curve and its bootstrap band (log-log)."""
    L = table.loss
    if fit.form == "chinchilla":
        # L(N, D) in 2-D: curves of L(N) at the lower / median / upper quartile of D.
        N, D = table.column(fit.columns["N"]), table.column(fit.columns["D"])
        sc = ax.scatter(N, L, c=np.log10(D), cmap="viridis", s=14, label=f"{label} runs".strip())
        ax.figure.colorbar(sc, ax=ax, label=f"log10 {fit.columns['D']}")
        xs = _grid(N)
        for q in (25, 50, 75):
            d = np.percentile(D, q)
            mid, lo, hi = fit.predict_band({"N": xs, "D": np.full_like(xs, d)})
            line, = ax.plot(xs, mid, label=f"fit, D={d:.3g}")
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xlabel(fit.columns["N"])
    else:
        x = table.column(fit.columns["x"])
        ax.scatter(x, L, s=14, label=f"{label} runs".strip())
        xs = _grid(x)
        mid, lo, hi = fit.predict_band({"x": xs})
        line, = ax.plot(xs, mid, label=f"{label} {fit.formula}".strip())
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, label=f"{100 * fit.bootstrap['ci']:.0f}% band")
        ax.set_xlabel(fit.columns["x"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(fit.loss_column)
    ax.legend(fontsize=7)


def residual_axes(ax: Axes, fit: FitResult, table: RunsTable) -> None:
    cols = {k: table.column(c) for k, c in fit.columns.items()}
    resid = np.log(table.loss) - np.log(fit.predict(cols))
    x = cols["N"] if "N" in cols else cols["x"]
    ax.scatter(x, resid, s=12)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(fit.columns.get("N", fit.columns.get("x")))
    ax.set_ylabel("log L - log L_fit")


def isoflop_axes(ax_curves: Axes, ax_opt: Axes, fit: FitResult, table: RunsTable) -> None:
    """Left: one parabola in log N per FLOP budget, minima marked. Right: N_opt(C), D_opt(C) power laws."""
    N, L = table.column(fit.columns["N"]), table.loss
    C = table.column(fit.columns["C"])
    group = budgets(C)
    for b in fit.budgets:
        sel = next(group == g for g in np.unique(group) if np.isclose(np.exp(np.log(C[group == g]).mean()), b["C"]))
        xs = np.logspace(np.log10(N[sel].min()), np.log10(N[sel].max()), 60)
        c0, c1, c2 = b["coef"]
        line, = ax_curves.plot(xs, c0 + c1 * np.log(xs) + c2 * np.log(xs) ** 2, label=f"C={b['C']:.2g}")
        ax_curves.scatter(N[sel], L[sel], s=12, color=line.get_color())
        ax_curves.scatter([b["N_opt"]], [b["L_opt"]], marker="*", s=80, color=line.get_color(), edgecolor="k")
    ax_curves.set_xscale("log")
    ax_curves.set_xlabel(fit.columns["N"])
    ax_curves.set_ylabel(fit.loss_column)
    ax_curves.legend(fontsize=7)
    Cb = np.array([b["C"] for b in fit.budgets])
    cs = _grid(Cb)
    p = fit.params
    for key, coef, expo in (("N_opt", "k_N", "a"), ("D_opt", "k_D", "b")):
        ax_opt.scatter(Cb, [b[key] for b in fit.budgets], s=16)
        ax_opt.plot(cs, p[coef] * cs ** p[expo], label=f"{key} = {p[coef]:.3g} C^{p[expo]:.3f}")
    ax_opt.set_xscale("log")
    ax_opt.set_yscale("log")
    ax_opt.set_xlabel("FLOPs C")
    ax_opt.legend(fontsize=7)


def _save(fig: Figure, stem: Path) -> list[Path]:
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight")
        out.append(path)
    return out


def save_fit_plots(fit: FitResult, table: RunsTable, stem: Path) -> list[Path]:
    """``<stem>_curve``, ``<stem>_residuals`` (predicting forms) or ``<stem>_isoflop`` as PNG and SVG."""
    paths: list[Path] = []
    if fit.spec.predict is not None:
        fig = Figure(figsize=(5.5, 4))
        ax = fig.subplots()
        curve_axes(ax, fit, table)
        ax.set_title(f"{fit.form}: {fit.formula}", fontsize=9)
        paths += _save(fig, stem.parent / f"{stem.name}_curve")
        fig = Figure(figsize=(5.5, 3))
        ax = fig.subplots()
        residual_axes(ax, fit, table)
        paths += _save(fig, stem.parent / f"{stem.name}_residuals")
    else:
        fig = Figure(figsize=(10, 4))
        a1, a2 = fig.subplots(1, 2)
        isoflop_axes(a1, a2, fit, table)
        paths += _save(fig, stem.parent / f"{stem.name}_isoflop")
    return paths
