"""Config section ``eval``: feature networks and sample counts for quality metrics."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.config.fields import bounded, choice, doc


@dataclass
class EvalConfig:
    feature_net: str = choice("mnist-cnn", ("mnist-cnn", "inception"), help="inception needs inception_weights")
    inception_weights: str = doc("", "local pt_inception-2015-12-05 weights (pytorch-fid format)")
    fid_inception: bool = doc(False, "srdd eval also reports FID-inception (the packaged TF-Inception port; ~0.5 s per image on 2 cores)")
    fid_resize: str = choice("bilinear", ("bilinear", "clean"), help="FID-inception resize to 299 px: pytorch-fid's bilinear, or clean-fid's PIL bicubic (metric FID-inception-clean)")
    net_ckpt: str = doc("", "platform-trained feature net; empty = <SRDD_HOME>/eval_net/<source>.pt")
    n_samples: int = bounded(1000, min=2, help="generated images per evaluation")
    batch_size: int = bounded(100, min=1)
    kid: bool = doc(True, "also compute KID")
    pr_k: int = bounded(3, min=1, help="k of the k-NN manifolds for precision/recall")
    net_epochs: int = bounded(6, min=1, help="epochs for `srdd eval-net-train`")
    net_batch_size: int = bounded(32, min=1, help="`srdd eval-net-train` batch size")
    net_lr_peak: float = bounded(3e-3, min=0.0, help="`srdd eval-net-train` one-cycle peak learning rate")
    kid_subsets: int = bounded(100, min=1, help="KID: random subsets averaged")
    kid_subset_size: int = bounded(1000, min=2, help="KID: samples per subset (capped at the set sizes)")
    is_splits: int = bounded(10, min=1, help="Inception Score splits (mean and std over them)")
