"""The attention benches: bench/train_step.py's SRDD-vs-VAR mask rows (shared weights, FLOP bounds,
roll-up goals) and bench/gpu.py (peak table, refusal without a GPU, CPU smoke run of the same code)."""
from __future__ import annotations

import json

import pytest
import torch

from bench import gpu, run_all, train_step

ROW_KEYS = {"variant", "size", "resolution", "attn_impl", "step_s", "ratio_vs_var_dense", "flop_bound_vs_var_dense",
            "ratio_vs_var_sparse", "flop_bound_vs_var_sparse"}


def test_mask_variants_share_one_set_of_weights():
    models = train_step.mask_models("d1", train_step.SCHEDULES[256], ["var-dense", "srdd-auto"])
    var, srdd = models["var-dense"], models["srdd-auto"]
    assert all(a is b for a, b in zip(var.parameters(), srdd.parameters()))  # one optimizer serves both
    assert (var.attn_window, var.attn_impl, srdd.attn_window, srdd.attn_impl) == (None, "dense", 0, "auto")
    assert not torch.equal(var.attn_bias_for_masking, srdd.attn_bias_for_masking)  # each its own mask


def test_mask_rows_carry_the_contract_and_the_issue_flop_bounds():
    rows = train_step.mask_rows("d1", 256, ["var-dense", "var-auto", "srdd-auto"], batch_size=1, warmup=0, repeats=1,
                                log=lambda _: None)
    assert all(ROW_KEYS <= set(r) for r in rows)
    by = {(r["variant"], r["attn_impl"]): r for r in rows}
    assert by["var", "dense"]["ratio_vs_var_dense"] == 1.0 and by["var", "dense"]["flop_bound_vs_var_dense"] == 1.0
    assert by["var", "auto"]["ratio_vs_var_sparse"] == 1.0 and by["srdd", "auto"]["step_s"] > 0
    # d16's bounds (issue: ~0.93 / 0.81 vs VAR dense, ~0.96 / 0.90 vs VAR tiled), from meta-device models
    from pretrain.config.model import ModelConfig
    from pretrain.model import build_model
    from pretrain.model.flops import train_flops_executed_per_sample

    for res, vs_dense, vs_sparse in ((256, 0.9256, 0.9614), (512, 0.8167, 0.8991)):
        with torch.device("meta"):
            m = build_model(ModelConfig(size="d16", num_classes=1000), 4096, 32, train_step.SCHEDULES[res])
        srdd = train_flops_executed_per_sample(m, attn_window=0)
        assert srdd / train_flops_executed_per_sample(m, attn_impl="dense") == pytest.approx(vs_dense, abs=1e-4)
        assert srdd / train_flops_executed_per_sample(m) == pytest.approx(vs_sparse, abs=1e-4)


def test_rollup_judges_each_ratio_against_its_bound():
    base = {"size": "d16", "resolution": 512}
    rows = [{**base, "variant": "srdd", "attn_impl": "auto", "ratio_vs_var_dense": 0.83, "flop_bound_vs_var_dense": 0.817,
             "ratio_vs_var_sparse": 0.95, "flop_bound_vs_var_sparse": 0.899},
            {**base, "variant": "var", "attn_impl": "auto", "ratio_vs_var_dense": 0.93, "flop_bound_vs_var_dense": 0.908}]
    heads = {h.metric: h for h in run_all.train_step_headlines({"rows": [], "mask_rows": rows})}
    assert heads["SRDD/VAR-dense step time d16 512px"].met is True  # |0.83 - 0.817| <= 0.03
    assert heads["SRDD/VAR-sparse step time d16 512px"].met is False  # 0.051 off
    assert heads["VAR tiled/dense step time d16 512px"].met is True


def test_peak_table_matches_the_most_specific_name_and_the_flag_wins():
    assert gpu.peak_tflops("NVIDIA H100 PCIe", None)[0] == 756.0
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3", None)[0] == 989.0
    assert gpu.peak_tflops("NVIDIA L40S", None)[0] == 362.0  # not the L4 row
    assert gpu.peak_tflops("NVIDIA H200", 500.0) == (500.0, "--peak-tflops")
    peak, why = gpu.peak_tflops("Some Future GPU", None)
    assert peak is None and "--peak-tflops" in why


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_bench_refuses_without_a_gpu(capsys, tmp_path):
    assert gpu.main(["--json", str(tmp_path / "gpu.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err and not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_gpu_bench_smoke_runs_the_same_code_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--smoke", "--masks", "srdd", "--peak-tflops", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["device"].startswith("cpu")
    (row,) = result["train"]
    assert "error" not in row, row
    assert (row["precision"], row["zero"], row["mask"], row["L"]) == ("bf16", 2, "srdd", 680)
    assert row["tokens_per_s"] > 0 and row["mfu"] == pytest.approx(row["achieved_tflops"] / 2)
    assert [r["variant"] for r in result["sampling"]] == ["var-10", "srdd-6"]
