"""Faithfulness to VAR's official VQVAE: tensors made by tests/fixtures/var_reference/make_var_reference.py
from VAR's own code (FoundationVision/VAR) at a small config; our model loads that state dict strictly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.tokenizer.checkpoint import TokenizerCheckpointError, from_var_state_dict, infer_var_config

REF_PATH = Path(__file__).parent / "fixtures" / "var_reference" / "var_vqvae_small.pt"


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(REF_PATH, weights_only=True)


@pytest.fixture(scope="module")
def vae(ref):
    sd = {k: v.float() for k, v in ref["state_dict"].items()}
    return from_var_state_dict(sd, patch_nums=ref["config"]["patch_nums"])


def test_config_inferred_from_shapes(ref):
    inferred = infer_var_config(ref["state_dict"])
    c = ref["config"]
    assert {k: inferred[k] for k in ("ch", "ch_mult", "num_res_blocks", "z_channels", "vocab_size")} == \
        {k: c[k] for k in ("ch", "ch_mult", "num_res_blocks", "z_channels", "vocab_size")}
    assert inferred["share_quant_resi"] == 4


def test_tokens_identical_to_var(ref, vae):
    idx = vae.encode_pyramid(ref["img"])
    assert len(idx) == len(ref["idx"])
    for k, (ours, theirs) in enumerate(zip(idx, ref["idx"])):
        assert torch.equal(ours, theirs), f"scale {k} differs"
    other = vae.encode_pyramid(ref["img"], patch_nums=ref["config"]["other_patch_nums"])
    assert all(torch.equal(a, b) for a, b in zip(other, ref["idx_other"]))


def test_teacher_forcing_input_and_reconstruction_match_var(ref, vae):
    with torch.no_grad():
        x_BLCv = vae.pyramid_to_var_input(ref["idx"])
        rec = vae.decode_pyramid(ref["idx"])
    torch.testing.assert_close(x_BLCv, ref["var_input"], rtol=0, atol=1e-5)
    torch.testing.assert_close(rec, ref["rec"], rtol=0, atol=1e-5)


def test_strict_load_lists_missing_unexpected_misshaped_keys(ref):
    sd = {k: v.float() for k, v in ref["state_dict"].items()}
    del sd["decoder.conv_out.bias"]
    sd["quantize.extra.weight"] = torch.zeros(1)
    with pytest.raises(TokenizerCheckpointError) as e:
        from_var_state_dict(sd, patch_nums=ref["config"]["patch_nums"], z_channels=4)
    msg = str(e.value)
    assert "missing (1): decoder.conv_out.bias" in msg
    assert "unexpected (1): quantize.extra.weight" in msg
    assert "mis-shaped" in msg and "quant_conv.weight: file (8, 8, 3, 3) vs model (4, 4, 3, 3)" in msg
