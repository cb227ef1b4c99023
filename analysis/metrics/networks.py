"""Which feature network an evaluation uses, and the names its metrics carry.

Numbers from different networks are different metrics: FID exists only for the
InceptionV3 weights file; the platform's own classifier gives FD-<name>/IS-<name>.
A network is identified by its file's sha256, which reference statistics record.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from analysis.metrics.checks import MetricInputError
from analysis.metrics.cnn import load_classifier
from analysis.metrics.fid_inception import load_fid_inception_net, metric_net_name
from data_pipeline import source_slug
from data_pipeline.files import file_sha256
from pretrain.config.eval import EvalConfig
from pretrain.config import home_dir
from pretrain.config.fields import ConfigError


def default_classifier_path(eval_cfg: EvalConfig, source: str) -> Path:
    """``eval.net_ckpt`` or ``<SRDD_HOME>/eval_net/<dataset>.pt`` (where `srdd eval-net-train` writes)."""
    return Path(eval_cfg.net_ckpt) if eval_cfg.net_ckpt else home_dir() / "eval_net" / f"{source_slug(source)}.pt"


@dataclass
class FeatureNet:
    name: str  # "mnist-cnn", "inception-v3": the suffix of every metric name
    sha256: str  # of the weights file: reference statistics must match it
    module: nn.Module  # has features(img_B3HW in [-1, 1]) -> (feats_BD, probs_BC)
    is_inception: bool = False

    def metric(self, kind: str) -> str:
        """``metric("FD")`` -> ``FD-mnist-cnn``; with the Inception weights FD is reported as FID."""
        if kind == "FD" and self.is_inception:
            kind = "FID"
        return f"{kind}-{self.name}"

    @torch.no_grad()
    def extract(self, batches: Iterable[torch.Tensor | tuple]) -> tuple[np.ndarray, np.ndarray | None]:
        """Concatenated (feats_ND, probs_NC) over batches of images (or (images, labels) pairs);
        probs is None for a network without a classifier head."""
        feats, probs = [], []
        for batch in batches:
            img_B3HW = batch[0] if isinstance(batch, (tuple, list)) else batch
            f_BD, p_BC = self.module.features(img_B3HW.float())
            feats.append(f_BD.double().numpy())
            if p_BC is not None:
                probs.append(p_BC.double().numpy())
        if not feats:
            raise MetricInputError(f"feature net {self.name}: no images to extract features from")
        return np.concatenate(feats), (np.concatenate(probs) if probs else None)


def fid_inception_net(resize: str) -> FeatureNet:
    """The packaged TF-Inception port (``FID-inception``, or ``FID-inception-clean`` with clean-fid's resize)."""
    module, sha256 = load_fid_inception_net(resize)
    return FeatureNet(metric_net_name(resize), sha256, module, is_inception=True)


def load_feature_net(eval_cfg: EvalConfig, source: str) -> FeatureNet:
    """The network named by ``eval.feature_net`` (weights from ``eval.inception_weights`` / ``eval.net_ckpt``,
    else the one `srdd eval-net-train` made for dataset ``source``)."""
    if eval_cfg.feature_net == "inception":
        from analysis.metrics.inception import load_fid_inception

        if not Path(eval_cfg.inception_weights).is_file():
            raise ConfigError(f"eval.inception_weights={eval_cfg.inception_weights!r} is not a file; eval.feature_net=inception "
                              "needs the local pt_inception-2015-12-05-6726825d.pth (see docs/metrics.md)")
        module = load_fid_inception(eval_cfg.inception_weights)
        return FeatureNet("inception-v3", file_sha256(eval_cfg.inception_weights), module, is_inception=True)
    path = default_classifier_path(eval_cfg, source)
    if not path.is_file():
        raise ConfigError(f"eval.net_ckpt: no feature network at {path}; run `srdd eval-net-train` (or set eval.net_ckpt)")
    net, meta = load_classifier(path)
    return FeatureNet(meta["name"], file_sha256(path), net)
