"""`make bench`'s roll-up (bench/run_all.py): headline rows, goals judged from each script's JSON,
and a missing result reported as a failure rather than dropped."""
from __future__ import annotations

import json

from bench import run_all


def _train_step_json(speed_ratios: dict[str, float]) -> dict:
    row = {"size": "d2", "zero": 0, "precision": "fp32", "ranks": 1, "tokens_per_s": 1000.0}
    return {"rows": [{**row, "mask": "var", "step_s": 0.2}, {**row, "mask": "srdd", "step_s": 0.18}],
            "vs_var": [{"size": s, "speed_ratio_vs_var": r} for s, r in speed_ratios.items()]}


def test_goals_are_judged_and_a_missing_result_fails_the_rollup(tmp_path, capsys):
    (tmp_path / "train_step.json").write_text(json.dumps(_train_step_json({"d2": 1.07, "d4": 0.93})))
    rc = run_all.main(["--out", str(tmp_path), "--only", "train_step,fit", "--reuse"])
    assert rc == 1  # fit.json is missing: that bench counts as failed
    summary = {(h["bench"], h["metric"]): h for h in json.loads((tmp_path / "summary.json").read_text())}
    assert summary[("train_step", "SRDD/VAR step time d2 zero0 fp32 x1")]["value"] == 0.18 / 0.2
    assert summary[("train_step", "step speed vs VAR's models.VAR (d2, torch AdamW fp32)")]["met"] is True
    assert summary[("train_step", "step speed vs VAR's models.VAR (d4, torch AdamW fp32)")]["met"] is False
    assert summary[("fit", "run")]["met"] is False and "missing" in summary[("fit", "run")]["note"]
    table = (tmp_path / "summary.md").read_text()
    assert "| train_step | step speed vs VAR's models.VAR (d4, torch AdamW fp32) | 0.93 | >= 1.0 | **no** |" in table


def test_without_var_src_the_var_comparison_says_how_to_measure_it():
    rows = run_all.train_step_headlines({"rows": []})
    assert [(h.metric, h.value, h.note) for h in rows] == [
        ("step speed vs VAR's models.VAR", None, "set VAR_SRC to a checkout of FoundationVision/VAR to measure")]
