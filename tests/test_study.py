"""The study's comparisons: bootstrap intervals over seeds and samples, curves read at equal compute,
seeds that change the data order and init and nothing else, fits that resample seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import study as st
from analysis.intervals import mean_ci, paired_ci, welch_ci
from pretrain.config import load_config
from tests.fixtures.study_synthetic import make_study


def test_paired_and_welch_intervals_match_scipy():
    from scipy import stats

    assert np.isnan(mean_ci([2.0])[1]) and np.isnan(paired_ci([1.0], [0.5])[1])  # one seed: no interval
    a, b = [1.0, 5.0, 9.0], [0.1, 4.0, 7.9]  # paired: the seed noise (1, 5, 9) cancels
    d, lo, hi = paired_ci(a, b)
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert d == pytest.approx(1.0) and (lo, hi) == pytest.approx((ref.low, ref.high)) and lo > 0
    d, lo, hi = welch_ci(a, b)  # the same numbers as independent runs: the seed noise stays
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(1.0) and (lo, hi) == pytest.approx((ref.low, ref.high)) and lo < 0 < hi
    with pytest.raises(ValueError, match="as many seeds"):
        paired_ci([1.0, 2.0], [1.0])


def test_curves_are_read_at_equal_flops_and_thresholds(tmp_path):
    runs = st.load_runs(make_study(tmp_path, gain=0.0, flops_ratio=(0.5, 1.0)))
    assert len(runs) == 12 and {r.seed for r in runs} == {0, 1, 2}
    v = next(r for r in runs if r.name == "d2-var")
    x, y = v.curve["flops"].to_numpy(), v.curve["loss"].to_numpy()
    mid = np.sqrt(x[2] * x[3])  # half-way in log FLOPs
    assert st.value_at(v.curve, "flops", mid) == pytest.approx((y[2] + y[3]) / 2)
    assert np.isnan(st.value_at(v.curve, "flops", x[-1] * 2))  # no extrapolation
    assert st.first_reach(v.curve, "tokens", (y[4] + y[5]) / 2) == pytest.approx((v.curve["tokens"].iloc[4] + v.curve["tokens"].iloc[5]) / 2)
    # same loss per token, half the attended FLOPs per token: at equal attended FLOPs SRDD has seen twice the tokens
    eq = st.equal_compute_loss(runs, "d2", "flops")
    assert eq.ci_low > 0 and eq.n_seeds == 3
    assert st.equal_compute_loss(runs, "d2", "flops_executed").delta == pytest.approx(0.0, abs=1e-12)


def test_fd_convergence_reads_the_scored_snapshots(tmp_path):
    from tests.fixtures.study_synthetic import FD_POINTS, TOKENS

    runs = st.load_runs(make_study(tmp_path, gain=0.05))
    d2 = [r for r in runs if r.size == "d2"]
    assert all(list(r.fd_curve["tokens"]) == [f * TOKENS for f in FD_POINTS] for r in d2)
    assert all(r.fd_curve["fd"].iloc[-1] == r.metric("fd") for r in d2)  # the last point is the final eval
    assert st.convergence(runs, "d1", y="fd") is None  # no snapshots scored at d1
    threshold = max(r.metric("fd") for r in d2)  # the worst final FD: every run reaches it
    assert st.convergence_threshold(runs, "d2", y="fd") == pytest.approx(threshold)
    # independently: where each run's piecewise-linear FD curve (decreasing) crosses the threshold
    reach = {r.name: float(np.interp(threshold, r.fd_curve["fd"][::-1], r.fd_curve["tokens"][::-1])) for r in d2}
    cmp = st.convergence(runs, "d2", "tokens", y="fd")
    pairs = st.paired(runs, "d2")
    assert cmp.n_seeds == 3 and cmp.var == pytest.approx(np.mean([reach[v.name] for v, _ in pairs]))
    assert cmp.srdd == pytest.approx(np.mean([reach[s.name] for _, s in pairs]))
    assert cmp.ci_low > 0 and "FD <=" in cmp.detail  # the planted gain: SRDD's FD gets there on fewer tokens


def test_seeds_change_data_order_and_init_and_nothing_else(tiny_tokenizer_ckpt, pyramid_shards, single_rank):
    from slurm.demo import Study, train_config
    from slurm.runs import _leaves
    from slurm.sweep import grid
    from pretrain.train.loop import TransformerTask
    from tests.plugins.training_runs import train_overrides

    base = train_overrides(pyramid_shards, tiny_tokenizer_ckpt)
    cfgs = grid("sw", ["d1"], ["srdd"], [4000], [], base, seeds=[0, 1])
    study = Study("demo", ["d1"], ["srdd"], 4000, 10, False, base, False, seeds=[0, 1])
    for a, b in ((cfgs[0], cfgs[1]), (train_config(study, "d1", "srdd", 0), train_config(study, "d1", "srdd", 1))):
        la, lb = _leaves(a), _leaves(b)
        assert {k for k in la if la[k] != lb[k]} == {"seed", "run_name"}
        assert lb["run_name"] == la["run_name"] + "-seed1"

    def first(cfg):
        task = TransformerTask(cfg, single_rank)
        task.setup()
        labels, *_ = next(iter(task.batches()))
        return [p.detach().clone() for p in task.engines["model"].module.parameters()], labels

    (w0, x0), (w1, x1), (w0b, x0b) = first(cfgs[0]), first(cfgs[1]), first(cfgs[0])
    assert all(torch.equal(a, b) for a, b in zip(w0, w0b)) and torch.equal(x0, x0b)  # a seed is reproducible
    assert any(not torch.equal(a, b) for a, b in zip(w0, w1))  # init differs
    assert not torch.equal(x0, x1)  # data order differs


def test_fit_bootstrap_resamples_seeds_within_sizes_and_the_form_choice():
    from analysis.scaling.choose import choose_form, lack_of_fit_p
    from analysis.scaling.fit import design_points, fit_frame
    from analysis.scaling.table import validate_frame
    from pretrain.config.fit import FitConfig

    rng = np.random.default_rng(0)
    N = np.repeat([1e5, 4e5, 1.6e6, 6.4e6], 3)
    noise = np.exp(rng.normal(0, 0.002, len(N)))
    floor = pd.DataFrame({"params": N, "val_loss": (2.0 + 30 * N ** -0.3) * noise})  # flattens: needs an offset
    straight = pd.DataFrame({"params": N, "val_loss": (N / 1e12) ** -0.1 * noise})
    assert choose_form(floor).form == "power+const" and lack_of_fit_p(floor["params"], floor["val_loss"]) < 1e-3
    assert choose_form(straight).form == "power"
    assert choose_form(straight.iloc[::3]).p_value is None  # no replicates: nothing to test against
    table = validate_frame(floor, ["params"], "t")
    assert sorted(np.bincount(design_points(table, {"x": "params"}))) == [3, 3, 3, 3]
    fit = fit_frame(floor, FitConfig(form="power+const", bootstrap=30, seed=0))
    assert fit.bootstrap["over"] == "seeds within design points" and fit.bootstrap["succeeded"] == 30
    lo, hi = fit.intervals["E"]
    assert lo < 2.0 < hi * 1.02 and fit.params["alpha"] == pytest.approx(0.3, rel=0.2)


def test_demo_modes_and_explicit_flags():
    import argparse

    from slurm.demo import make_study

    cfg = load_config()
    ns = lambda **kw: argparse.Namespace(**{"full": False, "quick": False, **kw})  # noqa: E731
    full = make_study(ns(full=True), cfg, [])
    assert full.seeds == [0, 1, 2] and full.sizes == ["d1", "d2", "d3", "d4"] and len(full.mode.isoflop_budgets) >= 3
    assert full.runs[:3] == ["demo/d1-var", "demo/d1-var-seed1", "demo/d1-var-seed2"]
    demo = make_study(ns(), cfg, [])
    assert len(demo.seeds) >= 2 and not demo.mode.isoflop_budgets and not demo.mode.ablation
    mine = make_study(ns(full=True, sizes="d2,d3", seeds="4", tokens=1000.0, eval_samples=7), cfg, [])
    assert (mine.sizes, mine.seeds, mine.tokens, mine.eval_samples) == (["d2", "d3"], [4], 1000, 7)


def test_srdd_sweep_takes_seeds_and_overrides_after_list_flags():
    import argparse

    from slurm.sweep import add_arguments, grid, route_overrides

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(["--sizes", "d1", "--masks", "var", "srdd", "--seeds", "0", "2", "train.lr_peak=1e-3",
                              "--tokens", "4000", "train.batch_size=8"])
    route_overrides(args)
    assert (args.seeds, args.tokens, args.masks) == ([0, 2], [4000.0], ["var", "srdd"])
    assert sorted(args.overrides) == ["train.batch_size=8", "train.lr_peak=1e-3"]
    cfgs = grid("sw", args.sizes, args.masks, args.tokens, args.flops, args.overrides, args.seeds)
    assert [c.run_name for c in cfgs] == ["sw/d1-var-4e03", "sw/d1-var-4e03-seed2", "sw/d1-srdd-4e03",
                                          "sw/d1-srdd-4e03-seed2"]
    assert [c.seed for c in cfgs] == [0, 2, 0, 2] and all(c.train.batch_size == 8 for c in cfgs)
