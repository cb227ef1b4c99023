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


def test_a_retrained_feature_network_replaces_its_stale_val_reference(srdd_home, mnist_shards, monkeypatch):
    """A network file removed and retrained by the eval-net stage leaves the old network's cached val
    features behind; the evals would refuse them (another sha256), so the stage drops the cache.
    The stage's `srdd eval-net-train` subprocess is replaced by writing a network file (its training
    is tests/test_metrics_classifier.py's subject)."""
    import torch

    from analysis.evaluate import val_reference, val_reference_path
    from analysis.metrics.cnn import ClassifierCNN, save_classifier
    from analysis.metrics.networks import default_classifier_path, load_feature_net
    from analysis.metrics.reference import ReferenceMismatch

    cfg = load_config(overrides=[f"data.shards_dir={mnist_shards}", "data.num_workers=0"])
    path = default_classifier_path(cfg.eval, cfg.data.source)

    def train_net(seed: int) -> None:
        torch.manual_seed(seed)
        save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), path, {"name": "mnist-cnn"})

    train_net(0)
    val_reference(cfg, load_feature_net(cfg.eval, cfg.data.source), batch_size=30)  # cached for network 0
    path.unlink()
    monkeypatch.setattr(demo, "_srdd", lambda study, stage, *args: train_net(1) if stage == "eval-net-train" else None)
    study = demo.Study("demo", ["d1"], ["srdd"], 4000, 10, False, [], False)
    assert demo.stage_eval_net(study, cfg) is True  # trained
    net = load_feature_net(cfg.eval, cfg.data.source)
    assert not val_reference_path(cfg, net).exists()
    ref = val_reference(cfg, net, batch_size=30)  # rebuilt for network 1, not refused
    assert ref.provenance.net_sha256 == net.sha256
    assert demo.stage_eval_net(study, cfg) is False  # present: skipped, the cache stays
    assert val_reference_path(cfg, net).exists()
    train_net(2)  # the situation the stage prevents: a cache of another network is refused, naming both
    with pytest.raises(ReferenceMismatch):
        val_reference(cfg, load_feature_net(cfg.eval, cfg.data.source), batch_size=30)
