"""Feature networks (InceptionV3 layout, platform CNN) and cached reference statistics with provenance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.metrics import frechet_distance
from analysis.metrics.cnn import ClassifierCNN, load_classifier, save_classifier
from analysis.metrics.inception import FIDInceptionV3, load_fid_inception
from analysis.metrics.networks import FeatureNet
from analysis.metrics.reference import ReferenceMismatch, reference_for
from data_pipeline.files import file_sha256


def test_inception_matches_the_pytorch_fid_parameter_count():
    # torchvision documents inception_v3 at 27,161,264 parameters (1000 classes, with AuxLogits). pytorch-fid's
    # file drops AuxLogits (3,326,696) and has 1008 classes (+8 * 2049): 23,850,960. An independent check of
    # the layer shapes we rebuilt, since the real weights file cannot be downloaded here.
    net = FIDInceptionV3()
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    assert net.fc.weight.shape == (1008, 2048)


def test_inception_loads_a_pytorch_fid_format_state_dict(tmp_path):
    # Random weights in the weights file's format (the real file is not available offline; docs/metrics.md).
    torch.manual_seed(0)
    state = {k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    net = load_fid_inception(path)
    for k, v in state.items():
        assert torch.equal(net.state_dict()[k], v), k
    feats, probs = net.features(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_inception_refuses_other_state_dicts(tmp_path):
    state = FIDInceptionV3().state_dict()
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the FID graph
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="wrong shape \\['fc.weight'\\]"):
        load_fid_inception(tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        load_fid_inception(tmp_path / "missing.pth")


def _tiny_net(path, seed: int) -> FeatureNet:
    torch.manual_seed(seed)
    net = ClassifierCNN(num_classes=10, width=4, feat_dim=8)
    sha = save_classifier(net.eval(), path, {"name": "mnist-cnn"})
    loaded, meta = load_classifier(path)
    return FeatureNet(meta["name"], sha, loaded)


def test_classifier_round_trip_and_hash(tmp_path):
    net = _tiny_net(tmp_path / "a.pt", seed=0)
    assert net.sha256 == file_sha256(tmp_path / "a.pt") and len(net.sha256) == 64
    assert net.metric("FD") == "FD-mnist-cnn" and net.metric("IS") == "IS-mnist-cnn"
    assert FeatureNet("inception-v3", "x", net.module, is_inception=True).metric("FD") == "FID-inception-v3"
    feats, probs = net.extract([(torch.rand(3, 3, 32, 32), torch.zeros(3)), torch.rand(2, 3, 16, 16)])
    assert feats.shape == (5, 8) and probs.shape == (5, 10) and feats.dtype == np.float64


def test_reference_cached_with_provenance_and_mismatch_refused(tmp_path):
    net_a = _tiny_net(tmp_path / "a.pt", seed=0)
    net_b = _tiny_net(tmp_path / "b.pt", seed=1)
    imgs = torch.rand(20, 3, 32, 32) * 2 - 1
    calls = []

    def images():
        calls.append(1)
        return [imgs[:10], imgs[10:]]

    cache = tmp_path / "ref" / "mnist-cnn-val.npz"
    ref = reference_for(cache, net_a, "m1", "val", images)
    again = reference_for(cache, net_a, "m1", "val", images)
    assert len(calls) == 1  # computed once, then read back
    assert again.provenance == ref.provenance and again.provenance.count == 20
    np.testing.assert_array_equal(again.feats_ND, ref.feats_ND)
    feats, _ = net_a.extract([imgs])
    assert frechet_distance(feats, again.feats_ND) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ReferenceMismatch, match="feature net mnist-cnn .* but this evaluation uses"):
        reference_for(cache, net_b, "m1", "val", images)
    with pytest.raises(ReferenceMismatch, match="dataset manifest"):
        reference_for(cache, net_a, "m2", "val", images)
    rebuilt = reference_for(cache, net_b, "m2", "val", images, refresh=True)
    assert rebuilt.provenance.net_sha256 == net_b.sha256 and len(calls) == 2


def test_missing_feature_networks_are_config_errors(tmp_path):
    from analysis.metrics.networks import load_feature_net
    from pretrain.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="eval.net_ckpt: no feature network .*srdd eval-net-train"):
        load_feature_net(load_config().eval, "mnist")
    with pytest.raises(ConfigError, match="eval.inception_weights=''"):
        load_feature_net(load_config(overrides=["eval.feature_net=inception"]).eval, "mnist")
