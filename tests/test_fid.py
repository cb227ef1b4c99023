"""FID-inception (`srdd fid`, the packaged TF-Inception port): preprocessing, the stage's output and
caching, and the value on real CIFAR-10 against an independent computation from the same features."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.metrics.fid_inception import INPUT_SIDE, inception_input
from analysis.metrics.networks import fid_inception_net
from analysis.metrics.reference import load_reference
from bench.eval import CIFAR_TEST, disjoint_class_subsets, independent_fid
from pretrain.cli import main as cli_main
from pretrain.weights import FID_INCEPTION


def test_inception_input_follows_pytorch_fid_and_clean_fid():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 13, 3), dtype=np.uint8)  # 299 = 13 * 23: every source centre is an output pixel
    # pytorch-fid: [0, 1] -> bilinear (align_corners=False) -> 2x - 1; an already-299 image is not resampled
    big = rng.integers(0, 256, (INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
    assert torch.equal(inception_input([big], "bilinear")[0], torch.from_numpy(big).permute(2, 0, 1).float() / 255 * 2 - 1)
    x = inception_input([img], "bilinear")
    assert x.shape == (1, 3, INPUT_SIDE, INPUT_SIDE) and -1 <= x.min() and x.max() <= 1
    # a bilinear upsample with align_corners=False keeps each source pixel's value at its own centre,
    # output pixel 23 i + 11 (source coordinate (o + 0.5) / 23 - 0.5 = i), and interpolates between them
    for i in range(13):
        for j in range(13):
            assert x[0, :, 23 * i + 11, 23 * j + 11].numpy() == pytest.approx(img[i, j] / 255 * 2 - 1, abs=1e-5)
    between = (img[0, 0].astype(float) * 22 + img[0, 1]) / 23  # output column 12: source coordinate 1/23
    assert x[0, :, 11, 12].numpy() == pytest.approx(between / 255 * 2 - 1, abs=1e-5)
    # clean-fid: PIL bicubic on float channels, clipped to [0, 255], then the TF graph's (x - 128) / 128
    flat = np.full((8, 8, 3), 200, np.uint8)
    assert torch.allclose(inception_input([flat], "clean"), torch.full((1, 3, INPUT_SIDE, INPUT_SIDE), (200 - 128) / 128))


def test_packaged_network_is_the_pinned_file():
    net = fid_inception_net("bilinear")
    assert net.sha256 == FID_INCEPTION.sha256 and net.metric("FD") == "FID-inception"
    assert fid_inception_net("clean").metric("FD") == "FID-inception-clean"
    feats, probs = net.extract([torch.rand(2, 3, 16, 16) * 2 - 1])
    assert feats.shape == (2, 2048) and probs is None and (feats >= 0).all()  # pool3 after ReLU


def write_npz(path: Path, images: np.ndarray) -> Path:
    np.savez(path, images=images, labels=np.zeros(len(images), np.int64))
    return path


@pytest.mark.slow  # one 2048-d matrix square root: ~40 s on one core
def test_srdd_fid_on_npz_writes_the_contract_and_caches(tmp_path, srdd_home, capsys, monkeypatch):
    from analysis.fid import spec_features
    from analysis.metrics.fid_inception import FIDInception

    rng = np.random.default_rng(0)
    a = write_npz(tmp_path / "a.npz", rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
    b = write_npz(tmp_path / "b.npz", rng.integers(0, 128, (4, 16, 16, 3), dtype=np.uint8))
    out = tmp_path / "fid.json"
    assert cli_main(["fid", "--real", str(a), "--fake", str(b), "--n", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"fid", "n_real", "n_fake", "network_sha256"} <= set(result)
    assert (result["n_real"], result["n_fake"], result["network_sha256"]) == (3, 3, FID_INCEPTION.sha256)
    assert result["fid"] > 0 and f"FID-inception {result['fid']:.4f}" in capsys.readouterr().out
    assert len(list((srdd_home / "fid_features").glob("*.npz"))) == 2
    # a second request for the same images is served from the cache: the network is not run again
    monkeypatch.setattr(FIDInception, "extract_uint8", lambda *a, **k: pytest.fail("features recomputed"))
    cached = spec_features(str(a), 3, 0, fid_inception_net("bilinear"), batch=10)
    assert cached.feats_ND.shape == (3, 2048) and cached.provenance.net_sha256 == FID_INCEPTION.sha256


def test_srdd_fid_rejects_bad_specs(tmp_path, capsys):
    assert cli_main(["fid", "--real", "imagenet", "--fake", str(tmp_path / "x.npz")]) == 2
    assert "--real 'imagenet'" in capsys.readouterr().err
    assert cli_main(["fid", "--real", "mnist", "--fake", str(tmp_path / "x.npz")]) == 2
    assert "--fake" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(CIFAR_TEST is None, reason="no CIFAR-10 test tarball: set SRDD_CIFAR10_DIR (docs/data.md)")
def test_fid_between_disjoint_cifar10_subsets_matches_an_independent_computation(tmp_path, srdd_home):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    disjoint_class_subsets(CIFAR_TEST, a, b, per_class=10)  # 100 vs 100 images (~0.5 s each through the network)
    out = tmp_path / "fid.json"
    assert cli_main(["fid", "--real", f"tar:{a}", "--fake", f"tar:{b}", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["n_real"], result["n_fake"]) == (100, 100)
    feats = {}
    for path in (srdd_home / "fid_features").glob("*.npz"):  # the features the stage used, from its cache
        ref = load_reference(path)
        assert ref.provenance.net_sha256 == FID_INCEPTION.sha256
        feats["a" if "-a-tar-" in path.name else "b"] = ref.feats_ND
    want = independent_fid(feats["a"], feats["b"])
    assert result["fid"] == pytest.approx(want, rel=1e-6)
    assert 20 < result["fid"] < 300  # two samples of one distribution at N = 100: large small-N bias, not 0
    # the same set against itself: ~0 (from the cache, no network pass)
    assert cli_main(["fid", "--real", f"tar:{a}", "--fake", f"tar:{a}", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["fid"] < 1e-3
