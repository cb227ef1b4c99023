"""The platform's own feature network: a small CNN classifier trained on the dataset (``srdd eval-net-train``).

Its penultimate activations give FD-<name> (a Fréchet distance like FID, but in
this network's feature space, so numbers are comparable only between runs that
used the same network file: the file's sha256 travels with every number) and its
softmax gives IS-<name>.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data_pipeline.files import file_sha256
from pretrain.outputs import atomic_path

FORMAT = "srdd-eval-net-v1"


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ClassifierCNN(nn.Module):
    """conv x2 -> pool -> conv x2 -> pool -> conv -> global mean -> fc (features) -> fc (logits).

    Global pooling makes it resolution-agnostic; ~60k parameters train in seconds on a CPU core.
    """

    def __init__(self, num_classes: int, width: int = 16, feat_dim: int = 128, in_ch: int = 3):
        super().__init__()
        self.arch = {"num_classes": num_classes, "width": width, "feat_dim": feat_dim, "in_ch": in_ch}
        w = width
        self.body = nn.Sequential(
            _conv_bn(in_ch, w), _conv_bn(w, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
        )
        self.feat = nn.Linear(4 * w, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes)
        self.num_features = feat_dim
        self.num_classes = num_classes

    def penultimate(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return F.relu(self.feat(self.body(img_B3HW).mean(dim=(2, 3))))

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(img_B3HW))

    def features(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate_BD, probs_BC) for FD and IS."""
        feats_BD = self.penultimate(img_B3HW)
        return feats_BD, F.softmax(self.head(feats_BD), dim=1)


def save_classifier(net: ClassifierCNN, path: str | os.PathLike, meta: dict[str, Any],
                    state_dict: dict[str, torch.Tensor] | None = None) -> str:
    """Write ``{"format", "arch", "meta", "state_dict"}`` atomically; returns the file's sha256.
    ``state_dict`` (default: the module's own) is what training passes: its consolidated weights."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "arch": net.arch, "meta": meta,
                    "state_dict": net.state_dict() if state_dict is None else state_dict}, tmp)
    return file_sha256(path)


def load_classifier(path: str | os.PathLike) -> tuple[ClassifierCNN, dict[str, Any]]:
    """The network (eval mode, frozen) and the metadata saved with it (name, dataset, val accuracy...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no feature network; train one with `srdd eval-net-train` or set eval.net_ckpt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    net = ClassifierCNN(**ckpt["arch"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().requires_grad_(False), ckpt["meta"]
