"""PyramidLoader: exact resume (also with worker processes), node/worker split, epochs."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from data_pipeline.pyramid_shards.loader import PyramidLoader
from data_pipeline.stream import StreamSpec, raw_batches, split_shards
from pretrain.config import load_config


def same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


@pytest.fixture
def cfg(pyramid_shards):
    return load_config(overrides=[f"data.pyramids_dir={pyramid_shards}", "data.shuffle_buffer=64"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_yields_the_uninterrupted_batches(cfg, num_workers):
    ref = list(itertools.islice(PyramidLoader(cfg, batch_size=16, seed=3), 45))  # 18 batches/epoch: crosses 2 epochs
    first = PyramidLoader(cfg, batch_size=16, seed=3, num_workers=num_workers)
    head = list(itertools.islice(first, 23))
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert state["epoch"] == 1 and state["batch"] == 5
    resumed = PyramidLoader(cfg, batch_size=16, seed=3, num_workers=num_workers)
    resumed.load_state_dict(state)
    tail = list(itertools.islice(resumed, 22))
    assert all(same(a, b) for a, b in zip(ref, head + tail)) and len(head + tail) == 45
    assert not same(ref[0], ref[18])  # epochs are reshuffled
    with pytest.raises(ValueError, match="batch_size"):
        PyramidLoader(cfg, batch_size=8, seed=3).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 4])  # 3 train shards: split by shard, then by sample
def test_node_split_disjoint_and_complete(pyramid_shards, world_size):
    shards = split_shards(pyramid_shards, "train")
    keys = []
    for rank in range(world_size):
        spec = StreamSpec(shards, 7, seed=1, rank=rank, world_size=world_size, shuffle_buffer=32, infinite=False)
        keys += [k for batch in raw_batches(spec, epoch=0) for k, _ in batch]
    assert len(keys) == 300 and len(set(keys)) == 300


def test_epoch_mode_and_val_order(cfg):
    train = PyramidLoader(cfg, batch_size=64, infinite=False)
    sizes = [len(label_B) for label_B, _ in train]
    assert sizes == [64, 64, 64, 64, 44]
    assert train.state_dict()["epoch"] == 1  # the next iter() is the next epoch
    val_a = list(PyramidLoader(cfg, "val", batch_size=25, infinite=False))
    val_b = list(PyramidLoader(cfg, "val", batch_size=25, seed=9, infinite=False))
    assert [len(b[0]) for b in val_a] == [25, 25, 10] and all(same(a, b) for a, b in zip(val_a, val_b))
