"""`srdd eval-net-train`: the platform's feature network, trained through the real image shards and loader."""
from __future__ import annotations

import json

import pytest
import torch

from analysis.metrics.cnn import load_classifier
from data_pipeline.files import file_sha256
from pretrain.cli import main


def _trained(capsys, overrides: list[str], min_acc: float) -> tuple[int, dict]:
    rc = main(["eval-net-train", "--min-acc", str(min_acc), "data.num_workers=0", *overrides])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_net_train_writes_a_hashed_network(mnist_shards, srdd_home, capsys):
    rc, out = _trained(capsys, [f"data.shards_dir={mnist_shards}", "eval.net_epochs=1"], min_acc=0.99)
    assert rc == 1  # 1 epoch on 300 digits cannot reach 99%: the bar is enforced by the exit code
    path = srdd_home / "eval_net" / "mnist.pt"
    assert out["path"] == str(path) and out["sha256"] == file_sha256(path)
    assert out["manifest_sha256"] == file_sha256(mnist_shards / "manifest.json") and out["train_images"] == 300
    net, meta = load_classifier(path)
    assert meta["name"] == "mnist-cnn" and meta["val_acc"] == out["val_acc"]
    feats, probs = net.features(torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, 128) and probs.shape == (2, 10)
    assert (srdd_home / "eval_net" / "config.yaml").is_file()


@pytest.mark.slow
def test_mnist_feature_net_reaches_98_percent_val_accuracy(srdd_home, capsys):
    # The full embedded MNIST (4,500 train / 500 val real digits; the mnist_shards fixture is too small for the bar).
    from data_pipeline import shards_dir
    from data_pipeline.image_shards.write import write_shards
    from pretrain.config import load_config

    write_shards(load_config(), shards_dir(load_config()))
    rc, out = _trained(capsys, [], min_acc=0.98)
    assert out["train_images"] == 4500 and rc == 0 and out["val_acc"] >= 0.98
