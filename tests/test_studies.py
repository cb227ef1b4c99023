"""The scoring studies' arithmetic on planted per-seed values: intervals over seeds, the
distillation goal's verdicts and the SRDD-vs-VAR reconstruction comparison."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from analysis.intervals import mean_ci, verdict


def test_mean_ci_is_students_t_over_seeds():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sample std of 1,2,3 is 1
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert math.isnan(mean_ci([5.0])[1])
    assert verdict(0.1, 0.3) == "better" and verdict(-0.3, -0.1) == "worse" and verdict(-0.1, 0.1) == "inconclusive"
    assert verdict(math.nan, math.nan) == "inconclusive"


def distill_seeds(fd: dict[str, list[float]], flops: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "seed": s, "fd": v, "sampling_flops": flops[m], "latency_s": 0.1}
                         for m, values in fd.items() for s, v in enumerate(values)])


def test_distill_goal_verdicts():
    from analysis.distill_study import distill_goal

    flops = {"teacher": 100.0, "distilled": 40.0, "data_only": 80.0, "reindexed": 80.0}
    table = pd.DataFrame([{"model": m, "sampling_flops": f} for m, f in flops.items()])
    met = distill_seeds({"teacher": [10.0, 10.2, 9.9], "distilled": [9.9, 10.1, 9.8],
                         "data_only": [14.0, 15.0, 14.5], "reindexed": [30, 31, 29]}, flops)
    claims = distill_goal(table, met)
    assert [c["verdict"] for c in claims] == ["met", "met", "met", "met"]
    assert claims[1]["value"] == pytest.approx(0.4) and claims[0]["fd_ratio"] == pytest.approx(0.99, abs=1e-3)
    worse = distill_seeds({"teacher": [10.0, 10.2, 9.9], "distilled": [13.0, 13.5, 12.8],
                           "data_only": [12.0, 12.4, 12.1], "reindexed": [30, 31, 29]}, {**flops, "distilled": 90.0})
    assert [c["verdict"] for c in distill_goal(table.assign(sampling_flops=[100.0, 90.0, 80.0, 80.0]), worse)] == \
        ["not met", "not met", "not met", "not met"]


def test_edit_comparison_is_paired_by_seed_and_signed_for_srdd():
    from analysis.edit_study import compare, summarise

    rows = []
    for s in range(3):
        for model, psnr, fd in (("var", 20.0 + s, 5.0 + s), ("srdd", 21.0 + s, 5.0 + s + 0.1 * (s - 1))):
            rows.append({"model": model, "mask": "centre", "refine": "none", "seed": s, "run": model,
                         "psnr_known": psnr, "psnr_all": psnr, "lpips_all": 0.1, "fd": fd})
    seeds = pd.DataFrame(rows)
    out = compare(seeds).set_index("metric")
    # +1 dB on every seed: SRDD better with a zero-width interval; FD differences straddle 0; LPIPS equal
    assert out.loc["psnr_known", "srdd_minus_var_signed"] == pytest.approx(1.0)
    assert out.loc["psnr_known", "verdict"] == "srdd better"
    assert out.loc["fd", "verdict"] == "inconclusive" and out.loc["lpips_all", "verdict"] == "inconclusive"
    table = summarise(seeds, "FD-test")
    assert list(table["model"]) == ["var", "srdd"] and (table["n_seeds"] == 3).all()
    assert table.loc[0, "psnr_known"] == pytest.approx(21.0) and table.loc[0, "task"] == "inpaint"
