"""The claims table: verdicts from intervals, planted differences found, the documented schema."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest

from analysis.claims import (FIELDS, build_claims, claim_row, claims_document, validate, verdict,
                             write_claims)
from tests.fixtures.study_synthetic import make_study


def test_verdict_follows_the_interval_alone():
    assert verdict(0.01, 0.5) == "reproduced"
    assert verdict(-0.5, -0.01) == "contradicted"
    assert verdict(-0.1, 0.2) == verdict(0.0, 0.3) == verdict(-0.3, 0.0) == "inconclusive"  # 0 inside: no call
    assert verdict(None, None) == verdict(float("nan"), 1.0) == "not run"
    row = claim_row("c", "s", "m", var=1.0, srdd=2.0, delta=None, ci_low=None, ci_high=None, n_seeds=3, note="why")
    assert row["verdict"] == "not run" and all(row[k] is None for k in FIELDS[3:9])  # numbers null when not run
    one_seed = claim_row("c", "s", "m", 1.0, 2.0, -1.0, float("nan"), float("nan"), 1)  # measured, nothing to resample
    assert one_seed["verdict"] == "inconclusive" and one_seed["ci_low"] is None and one_seed["delta"] == -1.0
    validate(claims_document("t", [row, one_seed]))
    assert claim_row("c", "s", "m", 2.0, 1.0, 1.0, 0.4, 1.6, 2)["verdict"] == "reproduced"


def _by_claim(rows):
    return {r["claim"]: r for r in rows}


def test_planted_mask_difference_is_reproduced(tmp_path):
    rows = _by_claim(build_claims(make_study(tmp_path / "gain", gain=0.05)))
    equal = [r for c, r in rows.items() if c.startswith("Markovian")]
    assert len(equal) == 3 and all(r["verdict"] == "reproduced" for r in equal), equal
    loss = next(r for r in equal if "attended" in r["claim"])
    assert loss["n_seeds"] == 3 and loss["delta"] > 0.05  # fewer attended FLOPs per token: more tokens at equal C
    for target in ("tokens to a fixed val loss", "tokens to a fixed FD", "flops to a fixed FD"):
        faster = rows[f"SRDD converges faster than VAR ({target})"]
        assert faster["verdict"] == "reproduced" and faster["delta"] > 0, faster
    assert rows["A few coarse-to-fine steps capture most of the gain"]["verdict"] == "reproduced"


def test_no_mask_difference_is_inconclusive(tmp_path):
    rows = build_claims(make_study(tmp_path / "none", gain=0.0, flops_ratio=(1.0, 1.0)))
    equal = [r for r in rows if r["claim"].startswith("Markovian")]
    assert len(equal) == 3 and all(r["verdict"] == "inconclusive" for r in equal), equal
    assert all(r["ci_low"] < 0 < r["ci_high"] for r in equal)
    fd = next(r for r in rows if r["claim"] == "SRDD converges faster than VAR (tokens to a fixed FD)")
    assert fd["verdict"] == "inconclusive" and fd["ci_low"] < 0 < fd["ci_high"], fd


def test_claims_json_validates_and_what_was_not_run_is_null(tmp_path):
    root = make_study(tmp_path / "s", gain=0.05)
    doc = json.loads(write_claims(root).read_text())
    validate(doc)  # documented schema: docs/claims.schema.json
    assert (root / "claims.csv").is_file()
    not_run = [r for r in doc["claims"] if r["verdict"] == "not run"]
    # the synthetic study has no bench, refinement, distill, edit or ablation outputs
    assert {r["claim"].split(" (")[0] for r in not_run} >= {"SRDD samples at lower cost than VAR",
                                                            "The distilled short schedule keeps the teacher's quality"}
    assert all(list(r) == list(FIELDS) for r in doc["claims"]) and len(doc["notes"]) == len(doc["claims"])
    notes = dict(zip((r["claim"] for r in doc["claims"]), doc["notes"]))
    assert all(notes[r["claim"]] and r["delta"] is None and r["n_seeds"] is None for r in not_run)
    bad = json.loads(json.dumps(doc))
    bad["claims"][0]["ci_low"] = -1.0  # "reproduced" with an interval reaching below 0
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    for key, value in (("verdict", "likely"), ("n_seeds", 0), ("note", "x")):  # exactly the ten keys
        broken = json.loads(json.dumps(doc))
        broken["claims"][0][key] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_srdd_claims_prints_one_seed_rows_without_an_interval(tmp_path, capsys):
    import argparse

    from analysis.claims import main

    root = make_study(tmp_path / "one", gain=0.05, seeds=(0,))  # one seed per cell: val-loss deltas have no interval
    assert main(None, argparse.Namespace(study=str(root))) == 0
    out = capsys.readouterr().out
    rows = json.loads((root / "claims.json").read_text())["claims"]
    one = [r for r in rows if r["verdict"] == "inconclusive" and r["ci_low"] is None]
    assert one and all(r["n_seeds"] == 1 and r["delta"] is not None for r in one)
    assert "[-, -] n=1" in out and out.strip().endswith("claims.json")


def test_claims_from_the_study_csvs(tmp_path):
    """refinement.csv / distill.csv / edits.csv / ablation.csv, by their documented columns."""
    root = make_study(tmp_path / "s", gain=0.05)
    (root / "refinement.csv").write_text(
        "model,method,rounds,sampling_flops,fd,fd_ci_low,fd_ci_high,n_images,n_seeds,setting\n"
        "d2-srdd,onepass,0,1e9,10.0,9.5,10.5,200,3,a\nd2-srdd,restart,1,2e9,9.0,8.6,9.4,200,3,b\n"
        "d2-srdd,restart,2,3e9,8.0,7.6,8.4,200,3,b\n")
    (root / "refinement.json").write_text(json.dumps({"verdicts": [  # refine-study's own seed-paired intervals
        {"model": "d2-srdd", "method": "restart", "rounds": r, "setting": "b", "baseline": "onepass (a)", "fd_gain": g,
         "ci_low": lo, "ci_high": hi, "flops_ratio": f} for r, g, lo, hi, f in ((1, 1.0, 0.5, 1.5, 2.0), (2, 2.0, -0.1, 4.1, 3.0))]}))
    from analysis.distill_study import distill_goal

    seeds = pd.DataFrame([{"model": m, "seed": k, "fd": fd + dk, "sampling_flops": f, "latency_s": 0.1}
                          for m, fd, f in (("teacher", 10.0, 1e9), ("distilled", 10.2, 6e8), ("data_only", 14.0, 6e8),
                                           ("reindexed", 30.0, 6e8)) for k, dk in enumerate((-0.5, 0.0, 0.5))])
    table = seeds.groupby("model", sort=False).agg(fd=("fd", "mean"), sampling_flops=("sampling_flops", "mean"),
                                                   n_seeds=("seed", "size")).reset_index()
    table.assign(scales=[6, 4, 4, 4]).to_csv(root / "distill.csv", index=False)
    (root / "distill_goal.json").write_text(json.dumps(distill_goal(table, seeds)))
    # SRDD's PSNR 1 dB below VAR's on every mask, +-0.1 dB by seed; the refined rows must be ignored
    pd.DataFrame([{"model": m, "mask": mask, "refine": refine, "seed": k,
                   "psnr_all": (20.0 if m == "var" else 19.0) + (5.0 if refine == "mr" else 0.0) + 0.1 * (k - 1) * (m == "srdd")}
                  for m in ("var", "srdd") for mask in ("centre", "x2") for refine in ("none", "mr") for k in range(3)]
                 ).to_csv(root / "edits_seeds.csv", index=False)
    (root / "ablation").mkdir()
    cells = [("latent", "discrete", "residual", 10), ("latent", "discrete", "absolute", 12),
             ("latent", "continuous", "residual", 15), ("latent", "continuous", "absolute", 17),
             ("pixel", "discrete", "residual", 13), ("pixel", "discrete", "absolute", 15.5),
             ("pixel", "continuous", "residual", 19), ("pixel", "continuous", "absolute", 21.5)]
    (root / "ablation" / "ablation.csv").write_text(
        "cell,space,codes,bands,fd\n" + "".join(f"{a}-{b}-{c},{a},{b},{c},{fd}\n" for a, b, c, fd in cells))
    rows = _by_claim(build_claims(root))
    refine = rows["Refinement (resampling) improves SRDD samples at equal sampling FLOPs"]
    # the largest gain is picked (R=2), with its own interval: inconclusive although R=1's alone is above 0
    assert (refine["delta"], refine["ci_low"], refine["ci_high"], refine["verdict"]) == (2.0, -0.1, 4.1, "inconclusive")
    assert (refine["var"], refine["srdd"], refine["n_seeds"]) == (10.0, 8.0, 3)
    keep = rows["The distilled short schedule keeps the teacher's quality"]
    # paired seeds: 1.05 (10 + dk) - (10.2 + dk) = 0.3 + 0.05 dk, an interval of t(2) x sd / sqrt(3) around 0.3
    assert keep["delta"] == pytest.approx(1.05 * 10.0 - 10.2) and keep["verdict"] == "reproduced"
    assert keep["ci_low"] == pytest.approx(0.3 - 4.302653 * 0.025 / 3 ** 0.5, rel=1e-4) and keep["n_seeds"] == 3
    beats = rows["The distilled short schedule keeps the teacher's quality: distillation beats the data-only short schedule"]
    assert beats["verdict"] == "reproduced"
    zero = rows["SRDD reconstructs zero-shot (inpaint/outpaint/super-res) better than VAR"]
    assert zero["verdict"] == "contradicted" and zero["delta"] == pytest.approx(-1.0)  # refine=none rows only
    assert zero["ci_high"] == pytest.approx(-1.0 + 4.302653 * 0.1 / 3 ** 0.5, rel=1e-4)  # t(2) over the 3 paired seeds
    levers = {c: r for c, r in rows.items() if "lever)" in c}
    assert len(levers) == 3 and all(r["verdict"] == "reproduced" for r in levers.values())
    space = next(r for c, r in levers.items() if "(space lever)" in c)
    assert space["delta"] == pytest.approx((3 + 3.5 + 4 + 4.5) / 4)  # pixel - latent over the 4 matched pairs
    assert space["ci_low"] == pytest.approx(3.75 - 3.182446 * np.std([3, 3.5, 4, 4.5], ddof=1) / 2, rel=1e-5)
