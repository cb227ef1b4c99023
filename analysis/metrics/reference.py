"""Reference features of a dataset split, computed once per (dataset, feature network) and cached.

The cache file records its provenance: the image-shard manifest's sha256, the
feature network's sha256 and name, the split and the image count. Loading it
with a different network or a rebuilt dataset is refused: an FD against
statistics from another network is a meaningless number that looks plausible.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from analysis.metrics.frechet import GaussianStats, gaussian_stats
from analysis.metrics.networks import FeatureNet
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_path


class ReferenceMismatch(ConfigError):
    """Cached reference statistics were made with another feature network or dataset (CLI exit code 2)."""


@dataclass(frozen=True)
class Provenance:
    net_name: str
    net_sha256: str
    manifest_sha256: str
    split: str
    count: int


@dataclass
class Reference:
    feats_ND: np.ndarray  # kept (not only mean/cov): precision/recall and KID need the samples
    stats: GaussianStats
    provenance: Provenance


def check_provenance(prov: Provenance, net: FeatureNet, manifest_sha256: str, source: str) -> None:
    if prov.net_sha256 != net.sha256 or prov.net_name != net.name:
        raise ReferenceMismatch(
            f"{source}: reference features were computed with feature net {prov.net_name} (sha256 {prov.net_sha256[:12]}), "
            f"but this evaluation uses {net.name} (sha256 {net.sha256[:12]}); rebuild them (--refresh-reference)")
    if prov.manifest_sha256 != manifest_sha256:
        raise ReferenceMismatch(
            f"{source}: reference features belong to dataset manifest {prov.manifest_sha256[:12]}, but the shards' "
            f"manifest is now {manifest_sha256[:12]}; rebuild them (--refresh-reference)")


def save_reference(path: str | Path, ref: Reference) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, feats_ND=ref.feats_ND, provenance=np.array(json.dumps(asdict(ref.provenance))))


def load_reference(path: str | Path) -> Reference:
    with np.load(path, allow_pickle=False) as z:
        feats_ND = z["feats_ND"]
        prov = Provenance(**json.loads(str(z["provenance"])))
    return Reference(feats_ND, gaussian_stats(feats_ND, str(path)), prov)


def cached_features(path: str | Path, net: FeatureNet, manifest_sha256: str, split: str,
                    compute: Callable[[], np.ndarray], refresh: bool = False) -> Reference:
    """Load the cached features at ``path`` (checked against ``net`` and the dataset hash) or
    ``compute()`` them and cache them with their provenance."""
    path = Path(path)
    if path.is_file() and not refresh:
        ref = load_reference(path)
        check_provenance(ref.provenance, net, manifest_sha256, str(path))
        return ref
    feats_ND = compute()
    ref = Reference(feats_ND, gaussian_stats(feats_ND, f"{split} reference"),
                    Provenance(net.name, net.sha256, manifest_sha256, split, feats_ND.shape[0]))
    save_reference(path, ref)
    return ref


def reference_for(path: str | Path, net: FeatureNet, manifest_sha256: str, split: str,
                  images: Callable[[], Iterable], refresh: bool = False) -> Reference:
    """Load the cached reference at ``path`` (checked against ``net`` and the manifest) or build and cache it."""
    return cached_features(path, net, manifest_sha256, split, lambda: net.extract(images())[0], refresh)
