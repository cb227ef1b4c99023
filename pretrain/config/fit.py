"""Config section ``fit``: scaling-law forms, columns and bootstrap settings (`srdd fit`, `srdd report`)."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.config.fields import bounded, choice, doc

FORMS = ("power", "power+const", "chinchilla", "isoflop")


@dataclass
class FitConfig:
    runs: str = doc("", "runs table (CSV); empty = <SRDD_HOME>/runs.csv")
    form: str = choice("chinchilla", FORMS, help="power: L=(x/N_c)^-alpha | power+const: L=E+A/x^alpha | chinchilla: L=E+A/N^alpha+B/D^beta | isoflop: Hoffmann approach 2")
    x: str = choice("params", ("params", "non_embedding_params", "flops", "tokens"), help="the variable of the one-variable forms (power, power+const)")
    n_column: str = choice("params", ("params", "non_embedding_params"), help="the column used as N by chinchilla and isoflop")
    loss_column: str = doc("auto", "column fitted as L; auto = val_loss, else loss")
    bootstrap: int = bounded(200, min=0, help="bootstrap resamples for the intervals (0 = none)")
    seed: int = doc(0, "seed of the bootstrap resampling")
    ci: float = bounded(0.95, min=0.5, max=0.999, help="central probability of the bootstrap intervals")
    huber_delta: float = bounded(1e-3, min=1e-6, help="Huber delta on log-residuals (Hoffmann et al. 2022)")
    starts: int = bounded(64, min=0, help="L-BFGS-B starts: the best N points of the init grid by objective (0 = the whole grid)")
    boot_starts: int = bounded(4, min=1, help="grid starts per bootstrap resample (besides the full-data optimum)")
