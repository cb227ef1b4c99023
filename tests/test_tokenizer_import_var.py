"""`srdd import-var`: VAR's files validated and converted; bad files named."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.cli import main as srdd
from pretrain.config import load_config
from pretrain.model import build_model
from pretrain.tokenizer.checkpoint import load_tokenizer

REF_PATH = Path(__file__).parent / "fixtures" / "var_reference" / "var_vqvae_small.pt"
PNS = "1,2,3,4,6,8"


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(REF_PATH, weights_only=True)


@pytest.fixture
def var_vae_file(ref, tmp_path) -> Path:
    path = tmp_path / "vae_small.pth"
    torch.save(ref["state_dict"], path)  # a bare VAR state dict, as VAR releases it
    return path


def test_import_vae_and_var_writes_a_tokenizer_with_vars_tokens(ref, var_vae_file, tmp_path, srdd_home, capsys):
    model = build_model(load_config().model, vocab_size=64, z_channels=8, patch_nums=[1, 2, 3, 4, 6, 8])
    var_file = tmp_path / "var_small.pth"
    torch.save(model.state_dict(), var_file)
    assert srdd(["import-var", "--vae", str(var_vae_file), "--var", str(var_file), "--patch-nums", PNS,
                 "run_name=imp"]) == 0
    out = capsys.readouterr().out
    assert '"ch_mult": [\n        1,\n        1\n      ]' in out and '"params": 236731' in out
    assert f'"non_embedding_params": {model.num_non_embedding_params()}' in out
    vae = load_tokenizer(srdd_home / "imp" / "tokenizer.pt")
    assert all(torch.equal(a, b) for a, b in zip(vae.encode_pyramid(ref["img"]), ref["idx"]))
    assert (srdd_home / "imp" / "import_var.json").is_file()


def test_truncated_vae_file_is_named(var_vae_file, tmp_path, capsys):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(var_vae_file.read_bytes()[:5000])
    with pytest.raises(SystemExit, match=r"cut.pth \(5000 bytes\) cannot be read: truncated"):
        srdd(["import-var", "--vae", str(cut), "--patch-nums", PNS])


def test_wrong_schedule_or_mismatched_transformer_is_rejected(var_vae_file, tmp_path):
    model = build_model(load_config().model, vocab_size=32, z_channels=8, patch_nums=[1, 2, 3, 4, 6, 8])
    var_file = tmp_path / "var_v32.pth"
    torch.save(model.state_dict(), var_file)
    with pytest.raises(SystemExit, match=r"transformer \(V=32, Cvae=8\) does not match the VAE \(V=64"):
        srdd(["import-var", "--vae", str(var_vae_file), "--var", str(var_file), "--patch-nums", PNS])
    with pytest.raises(SystemExit, match="strictly increasing"):
        srdd(["import-var", "--vae", str(var_vae_file), "--patch-nums", "4,2"])
