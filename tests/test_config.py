"""Config schema: defaults, file/dotlist precedence, round trip, and errors that name the key."""
from __future__ import annotations

import pytest

from pretrain.config import ConfigError, SRDDConfig, load_config, to_yaml, valid_keys


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, SRDDConfig)
    assert cfg.model.window is None and cfg.train.betas == [0.9, 0.95]


def test_yaml_round_trip(tmp_path):
    cfg = load_config(overrides=["model.size=d4", "train.lr_peak=3e-4", "tokenizer.patch_nums=[1,2,4]"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(path)
    assert again == cfg
    assert again.tokenizer.patch_nums == [1, 2, 4] and again.train.lr_peak == 3e-4


def test_override_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  size: d4\ntrain:\n  max_steps: 7\n  batch_size: 32\n")
    cfg = load_config(path, ["train.max_steps=9"])
    assert cfg.model.size == "d4"          # file beats default
    assert cfg.train.max_steps == 9        # command line beats file
    assert cfg.train.batch_size == 32      # file value kept where not overridden
    assert cfg.train.grad_clip == 2.0      # default kept


@pytest.mark.parametrize("override, named, suggested", [
    ("model.szie=d2", "model.szie", "model.size"),
    ("train.lr_paek=1e-3", "train.lr_paek", "train.lr_peak"),
    ("modle.size=d2", "modle.size", "model.size"),
])
def test_unknown_key_names_key_and_closest(override, named, suggested):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert named in str(e.value) and suggested in str(e.value)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  warmup_steps: 3\n")
    with pytest.raises(ConfigError, match=r"train\.warmup_steps.*c\.yaml"):
        load_config(path)


@pytest.mark.parametrize("override, pattern", [
    ("model.size=d99", r"model\.size='d99'.*d16"),
    ("model.mask=causal", r"model\.mask='causal'.*srdd"),
    ("train.max_steps=abc", r"train\.max_steps='abc'"),
    ("train.zero_stage=4", r"train\.zero_stage=4 is above its maximum 3"),
    ("data.source=imagenet", r"data\.source='imagenet'"),
    ("model.attn_window=2", r"model\.attn_window=2 contradicts model\.mask='var'"),
    ("tokenizer.patch_nums=[1,3,2]", r"tokenizer\.patch_nums"),
    ("train.snapshots=[0.5,1.0]", r"train\.snapshots=\[0\.5, 1\.0\] must be fractions in \(0, 1\)"),
    ("train.lr_peak", r"key=value"),
])
def test_bad_value_names_key_value_and_allowed(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides=[override])


def test_mask_presets_resolve_window():
    assert load_config(overrides=["model.mask=srdd"]).model.window == 0
    assert load_config(overrides=["model.mask=window", "model.attn_window=3"]).model.window == 3
    with pytest.raises(ConfigError, match="attn_window"):
        load_config(overrides=["model.mask=window"])


def test_valid_keys_cover_every_section():
    sections = {k.split(".")[0] for k in valid_keys()}
    assert {"data", "tokenizer", "model", "train", "sample", "eval", "slurm", "pyramid"} <= sections


def test_readme_config_reference_is_current():
    from pathlib import Path

    from pretrain.config.reference import embed

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    assert embed(text) == text, "README config reference is stale: python -m pretrain.config.reference --write README.md"
