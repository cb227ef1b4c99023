"""Runs tables drawn from known scaling laws plus log-normal noise (fitter validation and the benchmark).

Noise is multiplicative (L * exp(eps), eps ~ N(0, sigma)), the error model that a
fit on log-residuals assumes. Compute is C = 6 N D (Kaplan et al. 2020).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# Hoffmann et al. 2022's published approach-3 estimates: a realistic truth to recover.
CHINCHILLA_TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _noisy(L: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return L * np.exp(rng.normal(0.0, sigma, size=L.shape))


def chinchilla_table(n: int = 250, truth: dict[str, float] = CHINCHILLA_TRUTH, sigma: float = 0.01,
                     seed: int = 0) -> pd.DataFrame:
    """``n`` runs with N log-uniform in [1e7, 1e10] and D/N log-uniform in [1, 100] tokens per parameter."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = N * np.exp(rng.uniform(0.0, np.log(100.0), n))
    L = truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]
    return pd.DataFrame({"run": [f"r{i}" for i in range(n)], "params": N, "tokens": D, "flops": 6 * N * D,
                         "loss": _noisy(L, sigma, rng)})


def isoflop_table(truth: dict[str, float] = CHINCHILLA_TRUTH, budgets_flops: tuple[float, ...] = (1e18, 1e19, 1e20, 1e21),
                  per_budget: int = 9, sigma: float = 0.002, seed: int = 0) -> pd.DataFrame:
    """Per budget C, ``per_budget`` sizes spread one decade either side of the true N_opt(C), D = C / (6N)."""
    rng = np.random.default_rng(seed)
    alpha, beta, A, B = truth["alpha"], truth["beta"], truth["A"], truth["B"]
    rows = []
    for C in budgets_flops:
        # Minimise A/N^alpha + B/(C/6N)^beta analytically (Hoffmann et al. eq. 4).
        G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        N_opt = G * (C / 6) ** (beta / (alpha + beta))
        for N in N_opt * np.logspace(-1, 1, per_budget):
            D = C / (6 * N)
            rows.append({"params": N, "tokens": D, "flops": C, "loss": truth["E"] + A / N ** alpha + B / D ** beta})
    frame = pd.DataFrame(rows)
    frame["loss"] = _noisy(frame["loss"].to_numpy(), sigma, rng)
    return frame


def power_table(N_c: float = 2e9, alpha: float = 0.23, E: float = 0.0, n: int = 12, sigma: float = 0.005,
                seed: int = 0, x: str = "params") -> pd.DataFrame:
    """L = E + (x / N_c)^-alpha: E = 0 is VAR's form, E > 0 the power+const form (A = N_c^alpha)."""
    rng = np.random.default_rng(seed)
    X = np.logspace(6, 10, n)
    return pd.DataFrame({x: X, "tokens": np.full(n, 1e9), "loss": _noisy(E + (X / N_c) ** -alpha, sigma, rng)})
