"""Session fixtures for data artifacts (data area): small MNIST image shards and their pyramids.

Consumers pass the directory on as an override, e.g.
``load_config(overrides=[f"data.shards_dir={mnist_shards}", f"data.pyramids_dir={pyramid_shards}"])``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["mnist_shards", "pyramid_shards", "MNIST_SHARDS_OVERRIDES"]

# 360 real digits -> 300 train (3 shards of 100) + 60 val (1 shard).
MNIST_SHARDS_OVERRIDES = ["data.limit=360", "data.val_fraction=0.1666667", "data.shard_size=100"]


@pytest.fixture(scope="session")
def mnist_shards(tmp_path_factory) -> Path:
    """Image shards dir: train-00000{0,1,2}.tar (300 samples), val-000000.tar (60), manifest.json."""
    from data_pipeline.image_shards.write import write_shards
    from pretrain.config import load_config

    out = tmp_path_factory.mktemp("mnist_shards")
    cfg = load_config(overrides=[*MNIST_SHARDS_OVERRIDES, f"data.shards_dir={out}"])
    write_shards(cfg, out)
    return out


@pytest.fixture(scope="session")
def pyramid_shards(tmp_path_factory, mnist_shards, tiny_tokenizer_ckpt) -> Path:
    """Pyramid shards of ``mnist_shards`` made with ``tiny_tokenizer_ckpt`` (same names + manifests)."""
    from data_pipeline.pyramid_shards.precompute import run_slice
    from pretrain.config import load_config

    out = tmp_path_factory.mktemp("pyramid_shards")
    cfg = load_config(overrides=[*MNIST_SHARDS_OVERRIDES, f"data.shards_dir={mnist_shards}", f"data.pyramids_dir={out}",
                                 f"tokenizer.ckpt={tiny_tokenizer_ckpt}", "data.num_workers=0"])
    stats = run_slice(cfg, str(mnist_shards), str(tiny_tokenizer_ckpt), str(out))
    assert stats["complete"], stats
    return out
