"""Which one-variable form a runs table calls for: VAR's pure power law or the offset form.

L = (N / N_c)^-alpha is a straight line in log-log; a loss that flattens towards an irreducible
floor bends that line, and forcing a straight line through it gives a small exponent with a
meaningless N_c. With replicate seeds per size the bend can be tested rather than eyeballed:
the lack-of-fit F test of the straight line in (log N, log L) compares the scatter of the size
means around the line with the scatter of the seeds around their size mean (pure error; Draper &
Smith, Applied Regression Analysis, sec. 2.1). When the line fails (p < ``alpha``) the study fits
L = E + A / N^alpha; otherwise the pure power law suffices and has fewer parameters. Without
replicates or with fewer than 3 sizes there is nothing to test with: the power law is kept, and the
reason says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FormChoice:
    form: str  # "power" | "power+const"
    reason: str
    p_value: float | None  # lack-of-fit p of the pure power law (None: not testable)


def lack_of_fit_p(x: np.ndarray, y: np.ndarray) -> float | None:
    """p-value of the lack-of-fit F test of y = a + b log x on log y (None without replicates or 3 levels)."""
    from scipy import stats

    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    levels, group = np.unique(np.round(lx, 9), return_inverse=True)
    m, n = len(levels), len(ly)
    if m < 3 or n <= m:
        return None
    slope, icpt = np.polyfit(lx, ly, 1)
    means = np.array([ly[group == g].mean() for g in range(m)])
    counts = np.bincount(group)
    ss_pe = float(((ly - means[group]) ** 2).sum())
    ss_lof = float((counts * (means - (icpt + slope * levels)) ** 2).sum())
    if ss_pe <= 0:
        return 0.0 if ss_lof > 0 else 1.0
    f = (ss_lof / (m - 2)) / (ss_pe / (n - m))
    return float(stats.f.sf(f, m - 2, n - m))


def choose_form(frame: pd.DataFrame, x: str = "params", loss: str = "val_loss", alpha: float = 0.05) -> FormChoice:
    """The form the data calls for (module docstring), with the reason in words."""
    p = lack_of_fit_p(frame[x].to_numpy(), frame[loss].to_numpy())
    if p is None:
        return FormChoice("power", f"power law kept: lack of fit not testable ({frame[x].nunique()} sizes, "
                                   f"{len(frame)} runs; needs >= 3 sizes and replicate seeds)", None)
    if p < alpha:
        return FormChoice("power+const", f"offset form: the pure power law misses the size means by more than the "
                                         f"seed scatter allows (lack-of-fit F test p = {p:.3g} < {alpha})", p)
    return FormChoice("power", f"power law: no lack of fit beyond the seed scatter (F test p = {p:.3g} >= {alpha})", p)
