"""Scaling-law fits: parameter recovery on synthetic data (every form), row-order invariance, bad inputs, CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from analysis.scaling import synthetic
from pretrain.config.fit import FitConfig
from analysis.scaling.fit import FitResult, fit_frame
from analysis.scaling.forms import huber_objective, _objective_and_grad
from analysis.scaling.table import RunsTableError
from pretrain.config.fields import ConfigError


def _within(fit: FitResult, truth: dict[str, float]) -> None:
    for name, value in truth.items():
        lo, hi = fit.intervals[name]
        assert lo <= value <= hi, f"{name}: truth {value} outside the bootstrap interval [{lo}, {hi}] (fit {fit.params[name]})"


def test_huber_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    logX = np.log(rng.uniform(1e6, 1e9, (2, 30)))
    logL = rng.normal(1.0, 0.1, 30)
    theta = np.array([0.3, 6.0, 7.0, 0.4, 0.35])
    f, g = _objective_and_grad(theta, logX, logL, 1e-3)
    assert f == pytest.approx(huber_objective(theta, logX, logL, 1e-3)[0])
    eps = 1e-6
    fd = [(huber_objective(theta + eps * e, logX, logL, 1e-3)[0] - huber_objective(theta - eps * e, logX, logL, 1e-3)[0]) / (2 * eps)
          for e in np.eye(5)]
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


def test_chinchilla_recovers_known_parameters():
    truth = synthetic.CHINCHILLA_TRUTH
    fit = fit_frame(synthetic.chinchilla_table(n=120, sigma=0.01, seed=1), FitConfig(form="chinchilla", bootstrap=40, starts=16, boot_starts=2))
    _within(fit, truth)
    a_true = truth["beta"] / (truth["alpha"] + truth["beta"])
    assert fit.params["a"] == pytest.approx(fit.params["beta"] / (fit.params["alpha"] + fit.params["beta"]))
    assert fit.params["a"] + fit.params["b"] == pytest.approx(1.0)
    _within(fit, {"a": a_true, "b": 1 - a_true})
    assert fit.bootstrap["succeeded"] == 40


def test_power_forms_recover_known_parameters():
    power = fit_frame(synthetic.power_table(N_c=2e9, alpha=0.23, sigma=0.005, seed=2), FitConfig(form="power", bootstrap=100))
    _within(power, {"N_c": 2e9, "alpha": 0.23})
    const = fit_frame(synthetic.power_table(N_c=1e7, alpha=0.3, E=1.5, n=16, sigma=0.003, seed=3),
                      FitConfig(form="power+const", bootstrap=40, starts=16, boot_starts=2))
    _within(const, {"E": 1.5, "A": 1e7 ** 0.3, "alpha": 0.3})


def test_power_in_compute():
    frame = synthetic.power_table(N_c=5e18, alpha=0.05, sigma=0.002, seed=4, x="flops")
    fit = fit_frame(frame, FitConfig(form="power", x="flops", bootstrap=100))
    assert fit.columns == {"x": "flops"}
    _within(fit, {"N_c": 5e18, "alpha": 0.05})


def test_isoflop_recovers_compute_optimal_exponents():
    t = synthetic.CHINCHILLA_TRUTH
    fit = fit_frame(synthetic.isoflop_table(sigma=0.002, seed=5), FitConfig(form="isoflop", bootstrap=100))
    a = t["beta"] / (t["alpha"] + t["beta"])
    _within(fit, {"a": a, "b": 1 - a})
    assert len(fit.budgets) == 4


def test_row_order_does_not_change_the_fit():
    frame = synthetic.chinchilla_table(n=60, seed=6)
    cfg = FitConfig(form="chinchilla", bootstrap=5, starts=8, boot_starts=1)
    a = fit_frame(frame, cfg)
    b = fit_frame(frame.sample(frac=1.0, random_state=1).reset_index(drop=True), cfg)
    assert a.params == b.params
    assert a.intervals == b.intervals


def test_json_round_trip_predicts_the_same():
    fit = fit_frame(synthetic.power_table(seed=7), FitConfig(form="power", bootstrap=20))
    back = FitResult.from_json(json.loads(json.dumps(fit.to_json())))
    x = np.array([1e8, 1e11])
    np.testing.assert_allclose(back.predict_band({"x": x}), fit.predict_band({"x": x}))


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["tokens"]), "missing column(s) ['tokens']"),
    (lambda f: f.assign(params=f["params"].where(f.index != 3, -1.0)), "column 'params' must be a finite number > 0; bad at line 5 (run r3)"),
    (lambda f: f.assign(loss=f["loss"].where(f.index != 0, np.nan)), "column 'loss' must be a finite number > 0; bad at line 2 (run r0)"),
    (lambda f: f.head(4), "4 usable row(s) but the fit has 5 parameters"),
    (lambda f: f.assign(status=["failed"] * 57 + ["done"] * 3), "3 usable row(s)"),
])
def test_bad_inputs_are_rejected_with_the_row_and_column(mutate, message):
    frame = mutate(synthetic.chinchilla_table(n=60, seed=8))
    with pytest.raises(RunsTableError) as e:
        fit_frame(frame, FitConfig(form="chinchilla", bootstrap=0, starts=4), source="runs.csv")
    assert message in str(e.value)


def test_unfinished_runs_are_skipped_and_counted():
    frame = synthetic.power_table(seed=9)
    frame["run"] = [f"r{i}" for i in range(len(frame))]
    frame["status"] = ["done"] * (len(frame) - 1) + ["failed"]
    fit = fit_frame(frame, FitConfig(form="power", bootstrap=0))
    assert fit.n_points == len(frame) - 1
    assert "r11" in fit.skipped[0]


def _srdd(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pretrain.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_writes_fit_json_and_plots(tmp_path):
    synthetic.isoflop_table(seed=10).to_csv(tmp_path / "runs.csv", index=False)
    r = _srdd("fit", "--runs", "runs.csv", "--form", "isoflop", "--bootstrap", "30", "--out", "out/fit.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fit = json.loads((tmp_path / "out/fit.json").read_text())
    assert fit["format"] == "srdd-fit-v1" and fit["n_points"] == 36 and set(fit["params"]) == {"a", "b", "k_N", "k_D"}
    assert fit["bootstrap"]["resamples"] == 30 and len(fit["samples"]) == fit["bootstrap"]["succeeded"]
    for ext in ("png", "svg"):
        assert (tmp_path / f"out/fit_isoflop.{ext}").stat().st_size > 1000
    assert (tmp_path / "out/config.yaml").is_file()


def test_cli_bad_table_exits_2_naming_the_column(tmp_path):
    synthetic.power_table(seed=11).drop(columns=["loss"]).to_csv(tmp_path / "runs.csv", index=False)
    r = _srdd("fit", "--runs", "runs.csv", "--form", "power", cwd=tmp_path)
    assert r.returncode == 2
    assert "missing column(s) ['loss']" in r.stderr


def test_fit_flags_are_validated_and_name_the_key():
    import argparse

    from analysis.scaling.cli import fit_config
    from pretrain.config import load_config

    cfg = load_config()
    assert fit_config(cfg, argparse.Namespace(form="power", bootstrap=7)).bootstrap == 7
    with pytest.raises(ConfigError, match="fit.bootstrap"):
        fit_config(cfg, argparse.Namespace(bootstrap=-1))
