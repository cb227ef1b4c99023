"""The transformer: VAR state-dict compatibility, reference logits, attention windows, sizes, FLOPs."""
from __future__ import annotations

import json

import pytest
import torch

from pretrain.model import Transformer, VarStateDictError, build_model
from pretrain.config.model import ModelConfig
from pretrain.model.flops import forward_flops_per_sample, train_flops_per_sample
from pretrain.model.masks import attn_bias
from tests.fixtures.var_model_reference.reference import load_model_reference, reference_model


@pytest.fixture(scope="module")
def ref():
    return load_model_reference()


def logits_of(model: Transformer, ref, x_BLCv=None) -> torch.Tensor:
    with torch.no_grad():
        return model(ref["label_B"], ref["x_BLCv"] if x_BLCv is None else x_BLCv)


def test_strict_load_and_logits_equal_var_reference(ref):
    model = reference_model(ref=ref)
    assert (model.depth, model.C, model.num_heads, model.num_classes, model.V, model.Cvae) == (2, 64, 2, 10, 64, 8)
    assert model.state_dict().keys() == ref["state_dict"].keys()
    torch.testing.assert_close(logits_of(model, ref), ref["logits_BLV"], rtol=0, atol=1e-5)
    assert ref["logits_BLV"].std() > 0.3  # the reference weights make every block matter


def test_state_dict_round_trips_in_var_layout(ref):
    model = reference_model(ref=ref)
    again = Transformer.from_var_state_dict(model.state_dict(), patch_nums=model.patch_nums).eval()
    assert torch.equal(logits_of(again, ref), logits_of(model, ref))
    assert again.head.weight.data_ptr() != model.head.weight.data_ptr()  # loads copies, never aliases


@pytest.mark.parametrize("edit, named", [
    (lambda sd: sd.pop("blocks.1.attn.q_bias"), "missing (1): ['blocks.1.attn.q_bias']"),
    (lambda sd: sd.__setitem__("blocks.0.attn.k_bias", torch.zeros(64)), "unexpected (1): ['blocks.0.attn.k_bias']"),
    (lambda sd: sd.__setitem__("blocks.0.ffn.fc2.bias", torch.zeros(65)), "blocks.0.ffn.fc2.bias: file (65,) vs model (64,)"),
])
def test_mismatched_state_dict_is_refused_naming_keys(ref, edit, named):
    sd = dict(ref["state_dict"])
    edit(sd)
    with pytest.raises(VarStateDictError, match=named.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Transformer.from_var_state_dict(sd, patch_nums=ref["config"]["patch_nums"])


def test_wrong_patch_nums_is_refused(ref):
    with pytest.raises(VarStateDictError, match="pos_1LC: file \\(1, 130, 64\\) vs model \\(1, 680, 64\\)"):
        Transformer.from_var_state_dict(ref["state_dict"])  # VAR's 10 scales; the file has 6
    with pytest.raises(VarStateDictError, match="not a VAR transformer state dict"):
        Transformer.from_var_state_dict({"encoder.conv_in.weight": torch.zeros(1)})


def test_mask_follows_attn_window_not_the_loaded_buffer(ref):
    model = reference_model(attn_window=0, ref=ref)  # the file holds VAR's block-causal buffer
    assert torch.equal(model.attn_bias_for_masking, attn_bias(model.patch_nums, 0))
    model.load_state_dict(ref["state_dict"])
    assert torch.equal(model.attn_bias_for_masking, attn_bias(model.patch_nums, 0))
    block_causal = attn_bias(model.patch_nums, None)
    assert torch.equal(ref["state_dict"]["attn_bias_for_masking"], block_causal)  # VAR's own mask, bit for bit


def scale_changes(model: Transformer, ref, j: int) -> list[bool]:
    """Which scales' logits change when the inputs of scale j (>= 1) are perturbed."""
    x = ref["x_BLCv"]
    begin, end = model.begin_ends[j]
    x2 = x.clone()
    x2[:, begin - model.first_l:end - model.first_l] += torch.randn(x.shape[0], end - begin, x.shape[2],
                                                                    generator=torch.Generator().manual_seed(j))
    a, b = logits_of(model, ref, x), logits_of(model, ref, x2)
    return [not torch.equal(a[:, s:e], b[:, s:e]) for s, e in model.begin_ends]


@pytest.mark.parametrize("window", [None, 0, 1])
def test_markov_property_of_each_window(ref, window):
    """Scale k depends on scale j < k iff j >= k - w*D (w = window, D = depth; None: all j)."""
    model = reference_model(attn_window=window, ref=ref)
    K, D = len(model.patch_nums), model.depth
    for j in range(1, K):
        changed = scale_changes(model, ref, j)
        for k in range(K):
            reach = 0 if window is None else k - window * D
            assert changed[k] == (reach <= j <= k), (window, j, k)


def test_mask_presets_map_to_windows():
    base = dict(vocab_size=32, z_channels=4, patch_nums=(1, 2, 3))
    assert build_model(ModelConfig(size="d1", mask="var"), **base).attn_window is None
    assert build_model(ModelConfig(size="d1", mask="srdd"), **base).attn_window == 0
    assert build_model(ModelConfig(size="d1", mask="window", attn_window=2), **base).attn_window == 2


def test_class_condition_dropout_only_in_training(ref):
    model = reference_model(ref=ref)
    model.cond_drop_rate = 1.0
    null_B = torch.full_like(ref["label_B"], model.num_classes)
    with torch.no_grad():
        cond, null = model(ref["label_B"], ref["x_BLCv"]), model(null_B, ref["x_BLCv"])
        model.train()
        dropped = model(ref["label_B"], ref["x_BLCv"])
    assert torch.equal(dropped, null) and not torch.equal(cond, null)


def test_var_init_leaves_blocks_near_identity():
    """VAR's init: AdaLN gammas ~1e-5 * std, so an untrained stack barely changes its input."""
    model = Transformer(vocab_size=32, z_channels=4, patch_nums=(1, 2, 3), depth=2, num_classes=3, init_std=0.02)
    gammas = model.blocks[0].ada_lin[1].weight[:2 * model.C]
    assert 0 < gammas.std() < 1e-6 and model.blocks[0].ada_lin[1].bias.abs().max() == 0
    assert torch.allclose(model.blocks[0].attn.scale_mul_1H11.exp(), torch.tensor(4.0))
    assert abs(model.head.weight.std().item() - 0.02 * 0.02) < 1e-4
    auto = Transformer(vocab_size=32, z_channels=4, patch_nums=(1, 2, 3), depth=2, num_classes=3, init_std=0)
    assert abs(auto.word_embed.weight.std().item() - (1 / 3 / auto.C) ** 0.5) < 0.01


def test_var_d16_has_310m_params_and_nonembedding_excludes_lookup_tables():
    with torch.device("meta"):
        model = build_model(ModelConfig(size="d16", num_classes=1000), 4096, 32, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    assert abs(model.num_params() - 310.28e6) < 0.01e6  # VAR paper: d16 = 310M
    C = model.C
    lookup = 1001 * C + 680 * C + 10 * C + 1 * C  # class_emb, pos_1LC, lvl_embed, pos_start
    assert model.num_non_embedding_params() == model.num_params() - lookup


@pytest.mark.parametrize("window", [None, 0, 2])
def test_flops_match_an_independent_count_from_the_mask(window):
    model = Transformer(vocab_size=32, z_channels=4, patch_nums=(1, 2, 3, 4), depth=3, num_classes=3, attn_window=window)
    visible_pairs = int((model.attn_bias_for_masking == 0).sum())  # (query, key) pairs the mask allows
    expected = 2 * model.num_non_embedding_params() * model.L + 4 * model.depth * model.C * visible_pairs
    assert forward_flops_per_sample(model) == expected
    assert train_flops_per_sample(model) == 3 * expected


def test_srdd_sizes_prints_the_table(tmp_path, capsys):
    from pretrain.cli import main

    out = tmp_path / "sizes.json"
    assert main(["sizes", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VAR ImageNet 256px" in text and "310.28M" in text
    rows = json.loads(out.read_text())
    names = [r["size"] for r in rows]
    assert names == ["d1", "d2", "d3", "d4", "d6", "d8", "d16", "d20", "d24", "d30"] * 2
    var = {r["size"]: r for r in rows if r["table"].startswith("VAR")}
    assert [round(var[s]["params"] / 1e9, 1) for s in ("d16", "d20", "d24", "d30")] == [0.3, 0.6, 1.0, 2.0]
    assert all(r["fwd_flops_per_sample_srdd"] < r["fwd_flops_per_sample_var"] for r in rows)
