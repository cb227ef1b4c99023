"""bench/sampling.py smoke run at d1 (tiny tokenizer, batch 2): the JSON rows' schema, ratios
computed against var-10 of the same run, and the KV-cache peaks against their closed form.
No wall-clock assertions: latencies are only checked to be positive and consistent."""
from __future__ import annotations

import json

import pytest

from bench.sampling import SRDD6_PATCH_NUMS, VAR_PATCH_NUMS, VARIANTS, add_ratios, main

KEYS = {"variant", "size", "latency_s", "decode_s", "latency_cpu_s", "flops", "kv_cache_bytes_peak", "passes",
        "latency_ratio_vs_var", "kv_ratio_vs_var", "flops_ratio_vs_var", "cpu_ratio_vs_var", "batch", "patch_nums",
        "attn_window", "repeats"}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "sampling.json"
    assert main(["--sizes", "d1", "--batch", "2", "--repeats", "1", "--threads", "1", "--json", str(path)]) == 0
    return {r["variant"]: r for r in json.loads(path.read_text())}


def test_rows_cover_every_variant_with_the_schema(rows):
    assert sorted(rows) == sorted(VARIANTS)
    for r in rows.values():
        assert KEYS <= set(r), KEYS - set(r)
        assert r["size"] == "d1" and min(r["latency_s"], r["decode_s"], r["latency_cpu_s"]) > 0
        assert len(r["latency_runs_s"]) == r["repeats"] == 1
    assert rows["var-10"]["patch_nums"] == list(VAR_PATCH_NUMS) and rows["var-10"]["attn_window"] is None
    assert rows["srdd-6"]["patch_nums"] == list(SRDD6_PATCH_NUMS) and rows["srdd-6"]["attn_window"] == 0


def test_ratios_are_against_var10_of_the_same_run(rows):
    var = rows["var-10"]
    assert var["latency_ratio_vs_var"] == var["kv_ratio_vs_var"] == var["flops_ratio_vs_var"] == 1.0
    assert var["cpu_ratio_vs_var"] == 1.0
    for r in rows.values():
        assert r["cpu_ratio_vs_var"] == pytest.approx(r["latency_cpu_s"] / var["latency_cpu_s"])
        assert r["latency_ratio_vs_var"] == pytest.approx(r["latency_s"] / var["latency_s"])
        assert r["kv_ratio_vs_var"] == pytest.approx(r["kv_cache_bytes_peak"] / var["kv_cache_bytes_peak"])
        assert r["flops_ratio_vs_var"] == pytest.approx(r["flops"] / var["flops"])


def test_kv_peak_and_passes_match_their_closed_form(rows):
    # keys+values (2) x depth 1 x guided rows 2B = 4 x width 64 x fp32 (4 bytes) per attended token:
    # block-causal attends to all 680 tokens at the last scale, the SRDD mask only to its 256.
    per_token = 2 * 1 * 4 * 64 * 4
    assert rows["var-10"]["kv_cache_bytes_peak"] == per_token * sum(p * p for p in VAR_PATCH_NUMS)
    for name in ("srdd-10", "srdd-6", "srdd-10+sr", "srdd-6+sr"):
        assert rows[name]["kv_cache_bytes_peak"] == per_token * 16 * 16 < rows["var-10"]["kv_cache_bytes_peak"]
    assert rows["var-10"]["passes"] == rows["srdd-10"]["passes"] == 10 and rows["srdd-6"]["passes"] == 6
    for base in ("srdd-10", "srdd-6"):  # restart under SRDD's mask: one more pass per scale, no prefix
        assert rows[f"{base}+sr"]["passes"] == 2 * rows[base]["passes"] and rows[f"{base}+sr"]["kv_recompute_flops"] == 0
        assert rows[f"{base}+sr"]["flops"] == 2 * rows[base]["flops"]
    # block-causal: the same passes plus the recomputed prefix keys/values (re-quantised tokens differ at random init)
    assert rows["var-10+sr"]["passes"] > 2 * rows["var-10"]["passes"] and rows["var-10+sr"]["kv_recompute_flops"] > 0
    assert rows["var-10+sr"]["flops"] == 2 * rows["var-10"]["flops"] + rows["var-10+sr"]["kv_recompute_flops"]
    for base in ("var-10", "srdd-10", "srdd-6"):
        assert rows[f"{base}+sr"]["kv_cache_bytes_peak"] == rows[base]["kv_cache_bytes_peak"]
    assert rows["srdd-6"]["flops"] < rows["srdd-10"]["flops"] < rows["var-10"]["flops"]


def test_ratios_are_none_without_a_var_row():
    row = {"variant": "srdd-6", "size": "d1", "latency_s": 1.0, "kv_cache_bytes_peak": 1, "flops": 1}
    assert add_ratios([row])[0]["latency_ratio_vs_var"] is None
