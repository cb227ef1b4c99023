"""`srdd demo --dataset`: what each dataset hands every stage (the full study is the slow demo test's job)."""
from __future__ import annotations

import pytest

import slurm.demo as demo
from pretrain.config import load_config


def test_cifar10_study_settings_and_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(demo.CIFAR_ENV, str(tmp_path))
    cfg = load_config(overrides=demo.study_overrides("cifar10", quick=False, user=[]))
    assert cfg.data.source == f"cifar10:{tmp_path}" and cfg.data.limit == 6000 and cfg.data.resolution == 32
    assert (cfg.tokenizer.lpips, cfg.tokenizer.disc_start, cfg.eval.fid_inception) == ("alex", 300, True)
    # --quick's toy budgets override the dataset's, the user's override everything
    quick = load_config(overrides=demo.study_overrides("cifar10", quick=True, user=["eval.fid_inception=false"]))
    assert (quick.data.limit, quick.tokenizer.steps, quick.tokenizer.disc_start) == (400, 30, 15)
    assert quick.eval.fid_inception is False and quick.tokenizer.lpips == "alex"


def test_fashion_mnist_and_mnist_settings():
    fashion = load_config(overrides=demo.study_overrides("fashion-mnist", quick=False, user=[]))
    assert fashion.data.source == "fashion-mnist" and fashion.eval.fid_inception
    mnist = demo.study_overrides("mnist", quick=False, user=["x=1"])
    assert mnist == [*demo.SAMPLER_DEFAULTS, "tokenizer.steps=300", "x=1"]  # the user's override comes last
    assert load_config(overrides=mnist[:-1]).sample.top_k == 50


def test_missing_cifar10_is_refused_unless_a_source_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv(demo.CIFAR_ENV, raising=False)
    with pytest.raises(SystemExit, match="set SRDD_CIFAR10_DIR .* or pass data.source=cifar10:DIR"):
        demo.study_overrides("cifar10", quick=False, user=[])
    monkeypatch.setenv(demo.CIFAR_ENV, str(tmp_path / "absent"))
    with pytest.raises(SystemExit, match="SRDD_CIFAR10_DIR="):
        demo.study_overrides("cifar10", quick=False, user=[])
    assert demo.study_overrides("cifar10", quick=False, user=["data.source=cifar10:/x"])[-1] == "data.source=cifar10:/x"
