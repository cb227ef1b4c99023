"""Scaling-law forms and their point fits (no bootstrap here: see fit.py).

Each form maps a dict of column arrays to a dict of named parameters:

* ``power``        L = (x / N_c)^-alpha  (VAR, arXiv 2404.02905 sec. 5): least squares
                   in log-log space, log L = alpha log N_c - alpha log x.
* ``power+const``  L = E + A / x^alpha.
* ``chinchilla``   L = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3, as
                   re-done by Besiroglu et al. 2024): with E = e^e, A = e^a, B = e^b,
                   log L = LSE(a - alpha log N, b - beta log D, e); minimise the Huber loss
                   (delta 1e-3) of the log-residuals with L-BFGS-B from a grid of starts.
* ``isoflop``      Hoffmann approach 2: per FLOP budget C, L is a parabola in log N; its
                   minimum gives N_opt(C), and D_opt(C) is read off the budget's own
                   log D ~ log N line; then N_opt = k_N C^a and D_opt = k_D C^b.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize

Params = dict[str, float]
Columns = dict[str, np.ndarray]

# Hoffmann et al. 2022 / Besiroglu et al. 2024 initialisation grid.
EXPONENT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
LOG_E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)
LOG_COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
EXPONENT_BOUNDS = (0.0, 10.0)


# ---------------------------------------------------------------- Huber LSE fitter
# theta = (e, c_1..c_k, g_1..g_k); log L_hat = LSE(e, c_j - g_j log X_j). k = 1: power+const, k = 2: chinchilla.

def _terms(theta_Gp: np.ndarray, logX_kn: np.ndarray) -> np.ndarray:
    """The LSE's arguments for G parameter vectors at once: (G, k+1, n)."""
    k = logX_kn.shape[0]
    e_G, c_Gk, g_Gk = theta_Gp[:, 0], theta_Gp[:, 1:1 + k], theta_Gp[:, 1 + k:]
    power_Gkn = c_Gk[:, :, None] - g_Gk[:, :, None] * logX_kn[None]
    const_G1n = np.broadcast_to(e_G[:, None, None], (len(e_G), 1, logX_kn.shape[1]))
    return np.concatenate([const_G1n, power_Gkn], axis=1)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_objective(theta_Gp: np.ndarray, logX_kn: np.ndarray, logL_n: np.ndarray, delta: float) -> np.ndarray:
    """Sum of Huber losses of the log-residuals, divided by delta (keeps L-BFGS-B's relative ftol meaningful)."""
    t = _terms(np.atleast_2d(theta_Gp), logX_kn)
    r_Gn = np.logaddexp.reduce(t, axis=1) - logL_n
    return _huber(r_Gn, delta).sum(axis=1) / delta


def _objective_and_grad(theta_p: np.ndarray, logX_kn: np.ndarray, logL_n: np.ndarray, delta: float):
    k = logX_kn.shape[0]
    t_jn = np.empty((k + 1, logX_kn.shape[1]))
    t_jn[0] = theta_p[0]
    t_jn[1:] = theta_p[1:1 + k, None] - theta_p[1 + k:, None] * logX_kn
    m_n = t_jn.max(axis=0)
    w_jn = np.exp(t_jn - m_n)
    s_n = w_jn.sum(axis=0)
    p_jn = w_jn / s_n  # d logL_hat / d t_j (softmax)
    r_n = m_n + np.log(s_n) - logL_n
    dr_n = np.clip(r_n, -delta, delta)  # Huber'(r)
    grad = np.empty_like(theta_p)
    grad[0] = dr_n @ p_jn[0]
    grad[1:1 + k] = p_jn[1:] @ dr_n
    grad[1 + k:] = -((p_jn[1:] * logX_kn) @ dr_n)
    return _huber(r_n, delta).sum() / delta, grad / delta


def init_grid(k: int) -> np.ndarray:
    """All (e, c_1..c_k, g_1..g_k) combinations of the published grid: (G, 2k+1)."""
    axes = [LOG_E_GRID] + [LOG_COEF_GRID] * k + [EXPONENT_GRID] * k
    return np.array(list(itertools.product(*axes)), dtype=float)


def ranked_grid(logX_kn: np.ndarray, logL_n: np.ndarray, delta: float, starts: int = 0) -> np.ndarray:
    """The ``starts`` best grid points by objective (one vectorised pass; 0 = the whole grid, unranked)."""
    grid = init_grid(logX_kn.shape[0])
    if not starts or starts >= len(grid):
        return grid
    obj = np.concatenate([huber_objective(chunk, logX_kn, logL_n, delta) for chunk in np.array_split(grid, 16)])
    return grid[np.argsort(obj, kind="stable")[:starts]]


def fit_huber_lse(logX_kn: np.ndarray, logL_n: np.ndarray, delta: float, starts_Gp: np.ndarray) -> tuple[np.ndarray, float]:
    """L-BFGS-B from every start (exponents bounded to [0, 10]); the lowest optimum wins."""
    k = logX_kn.shape[0]
    # Optimise in centred coordinates c' = c - g * mean(log X): c and g are then nearly uncorrelated,
    # which cuts L-BFGS-B's iterations several-fold; the objective and the optimum are unchanged.
    mu_k = logX_kn.mean(axis=1)
    starts_Gp = np.atleast_2d(starts_Gp).copy()
    starts_Gp[:, 1:1 + k] -= starts_Gp[:, 1 + k:] * mu_k
    bounds = [(None, None)] * (1 + k) + [EXPONENT_BOUNDS] * k
    best_theta, best_f = None, np.inf
    for theta0 in starts_Gp:
        res = minimize(_objective_and_grad, theta0, args=(logX_kn - mu_k[:, None], logL_n, delta), jac=True,
                       method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-12, "gtol": 1e-8, "maxiter": 500})
        if np.isfinite(res.fun) and res.fun < best_f:
            best_theta, best_f = res.x.copy(), float(res.fun)
    if best_theta is None:
        raise FloatingPointError("no L-BFGS-B start converged to a finite objective")
    best_theta[1:1 + k] += best_theta[1 + k:] * mu_k
    return best_theta, best_f


# ---------------------------------------------------------------- the forms

@dataclass(frozen=True)
class FitSettings:
    """How the LSE forms search: Huber delta and their L-BFGS-B starts (ignored by the log-linear forms)."""

    delta: float = 1e-3
    starts: int = 64  # best grid points to start from when ``grid`` is None (0 = all)
    grid: np.ndarray | None = None  # explicit starts in theta coordinates, e.g. the full data's ranked grid
    warm: Params | None = None  # an extra start, e.g. the full-data optimum for a bootstrap resample


@dataclass(frozen=True)
class Form:
    """A scaling law: which columns it reads, its parameter names, how to fit and evaluate it."""

    name: str
    columns: tuple[str, ...]  # logical inputs: "x" (power forms), "N", "D", "C"
    params: tuple[str, ...]  # the fitted parameters (derived ones are added by the fit)
    formula: str
    fit: Callable[[Columns, np.ndarray, FitSettings], tuple[Params, float]]
    predict: Callable[[Params, Columns], np.ndarray] | None  # None: the form does not predict L (isoflop)
    min_points: int
    rank: Callable[[Columns, np.ndarray, float, int], np.ndarray] | None = None  # LSE forms: ranked grid starts


def _fit_power(cols: Columns, L: np.ndarray, s: FitSettings) -> tuple[Params, float]:
    logx, logL = np.log(cols["x"]), np.log(L)
    slope, icpt = np.polyfit(logx, logL, 1)
    alpha = -slope
    if alpha <= 0:
        raise FloatingPointError(f"loss does not decrease with x (log-log slope {slope:.3g})")
    resid = logL - (icpt + slope * logx)
    return {"N_c": float(np.exp(icpt / alpha)), "alpha": float(alpha)}, float(np.mean(resid ** 2))


def _predict_power(p: Params, cols: Columns) -> np.ndarray:
    return (cols["x"] / p["N_c"]) ** -p["alpha"]


# theta layout of the LSE forms: (e, a[, b], alpha[, beta]) with E = e^e, A = e^a, B = e^b.
_LSE_THETA = {1: ("E", "A", "alpha"), 2: ("E", "A", "B", "alpha", "beta")}


def _lse_logX(cols: Columns) -> np.ndarray:
    return np.log(np.vstack([cols["x"]] if "x" in cols else [cols["N"], cols["D"]]))


def _rank_lse(cols: Columns, L: np.ndarray, delta: float, starts: int) -> np.ndarray:
    return ranked_grid(_lse_logX(cols), np.log(L), delta, starts)


def _fit_lse(cols: Columns, L: np.ndarray, s: FitSettings) -> tuple[Params, float]:
    logX, logL = _lse_logX(cols), np.log(L)
    names = _LSE_THETA[logX.shape[0]]
    starts = s.grid if s.grid is not None else ranked_grid(logX, logL, s.delta, s.starts)
    if s.warm is not None:
        warm = [np.log(s.warm[n]) if n in ("E", "A", "B") else s.warm[n] for n in names]
        starts = np.vstack([warm, starts])
    theta, f = fit_huber_lse(logX, logL, s.delta, starts)
    p = {n: float(np.exp(t)) if n in ("E", "A", "B") else float(t) for n, t in zip(names, theta)}
    if "beta" in p:
        # Compute-optimal allocation under C ~ 6ND: N_opt ~ C^a, D_opt ~ C^b (Hoffmann et al. eq. 4).
        p["a"] = p["beta"] / (p["alpha"] + p["beta"])
        p["b"] = p["alpha"] / (p["alpha"] + p["beta"])
    return p, f


def _predict_power_const(p: Params, cols: Columns) -> np.ndarray:
    return p["E"] + p["A"] / cols["x"] ** p["alpha"]


def _predict_chinchilla(p: Params, cols: Columns) -> np.ndarray:
    return p["E"] + p["A"] / cols["N"] ** p["alpha"] + p["B"] / cols["D"] ** p["beta"]


# ---------------------------------------------------------------- isoFLOP (approach 2)

def budgets(C: np.ndarray, gap_dex: float = 0.05) -> np.ndarray:
    """Group runs into FLOP budgets: sorted log10 C splits where consecutive runs differ by > gap_dex."""
    order = np.argsort(C, kind="stable")
    logC = np.log10(C[order])
    group_sorted = np.concatenate([[0], np.cumsum(np.diff(logC) > gap_dex)])
    group = np.empty_like(group_sorted)
    group[order] = group_sorted
    return group


@dataclass(frozen=True)
class IsoflopBudget:
    C: float
    coef: tuple[float, float, float]  # L = c0 + c1 log N + c2 (log N)^2
    N_opt: float
    D_opt: float
    L_opt: float


def isoflop_budgets(cols: Columns, L: np.ndarray) -> list[IsoflopBudget]:
    """One parabola per budget with >= 3 runs and an interior minimum (c2 > 0)."""
    group = budgets(cols["C"])
    out = []
    for g in np.unique(group):
        sel = group == g
        if sel.sum() < 3:
            continue
        logN, logD = np.log(cols["N"][sel]), np.log(cols["D"][sel])
        c2, c1, c0 = np.polyfit(logN, L[sel], 2)
        if c2 <= 0:
            continue
        logN_opt = -c1 / (2 * c2)
        slope, icpt = np.polyfit(logN, logD, 1)
        out.append(IsoflopBudget(C=float(np.exp(np.log(cols["C"][sel]).mean())), coef=(c0, c1, c2),
                                 N_opt=float(np.exp(logN_opt)), D_opt=float(np.exp(icpt + slope * logN_opt)),
                                 L_opt=float(c0 + c1 * logN_opt + c2 * logN_opt ** 2)))
    return out


def _fit_isoflop(cols: Columns, L: np.ndarray, s: FitSettings) -> tuple[Params, float]:
    found = isoflop_budgets(cols, L)
    if len(found) < 2:
        raise FloatingPointError(f"isoflop needs >= 2 FLOP budgets with >= 3 runs and a minimum; found {len(found)}")
    logC = np.log([b.C for b in found])
    a, log_kN = np.polyfit(logC, np.log([b.N_opt for b in found]), 1)
    b, log_kD = np.polyfit(logC, np.log([b.D_opt for b in found]), 1)
    resid = np.log([f.N_opt for f in found]) - (log_kN + a * logC)
    return {"a": float(a), "b": float(b), "k_N": float(np.exp(log_kN)), "k_D": float(np.exp(log_kD))}, float(np.mean(resid ** 2))


FORMS: dict[str, Form] = {
    "power": Form("power", ("x",), ("N_c", "alpha"), "L = (x / N_c)^-alpha", _fit_power, _predict_power, 2),
    "power+const": Form("power+const", ("x",), ("E", "A", "alpha"), "L = E + A / x^alpha", _fit_lse,
                        _predict_power_const, 3, _rank_lse),
    "chinchilla": Form("chinchilla", ("N", "D"), ("E", "A", "B", "alpha", "beta"), "L = E + A / N^alpha + B / D^beta",
                       _fit_lse, _predict_chinchilla, 5, _rank_lse),
    "isoflop": Form("isoflop", ("N", "D", "C"), ("a", "b", "k_N", "k_D"), "N_opt = k_N C^a, D_opt = k_D C^b",
                    _fit_isoflop, None, 6),
}
