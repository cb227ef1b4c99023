"""PyramidLoader: exact resume (also with worker processes), node/worker split, epochs."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from data_pipeline.pyramid_shards.loader import PyramidLoader
from data_pipeline.stream import Position, StreamSpec, raw_batches, split_shards
from pretrain.config import load_config


def same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


@pytest.fixture
def cfg(pyramid_shards):
    return load_config(overrides=[f"data.pyramids_dir={pyramid_shards}", "data.shuffle_buffer=64"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_yields_the_uninterrupted_batches(cfg, num_workers):
    ref = list(itertools.islice(PyramidLoader(cfg, batch_size=16, seed=3), 45))  # 300 samples/epoch: crosses 2 epochs
    first = PyramidLoader(cfg, batch_size=16, seed=3, num_workers=num_workers)
    head = list(itertools.islice(first, 23))
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert (state["epoch"], state["index"], state["samples"]) == (1, 23 * 16 - 300, 23 * 16)
    resumed = PyramidLoader(cfg, batch_size=16, seed=3, num_workers=num_workers)
    resumed.load_state_dict(state)
    tail = list(itertools.islice(resumed, 22))
    assert all(same(a, b) for a, b in zip(ref, head + tail)) and len(head + tail) == 45
    assert not same(ref[0], ref[19])  # epochs are reshuffled (batch 19 starts at epoch 1's sample 4)
    with pytest.raises(ValueError, match="seed"):
        PyramidLoader(cfg, batch_size=16, seed=4).load_state_dict(state)


def _keys(spec: StreamSpec, start: Position = Position()) -> list[list[tuple[int, int, str]]]:
    return [[(r.epoch, r.index, r.key) for r in refs] for _, refs in raw_batches(spec, start)]


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_slice_one_global_order(pyramid_shards, world_size):
    """Every world size takes the same global sequence: rank r's batch j is slice r of row j; an
    epoch is covered exactly once (the last row partial in epoch mode)."""
    shards = split_shards(pyramid_shards, "train")
    spec = StreamSpec(shards, 5 * world_size, seed=1, shuffle_buffer=32, infinite=False)
    rows = _keys(spec)  # world 1, micro-batch 5W: one row per batch
    for rank in range(world_size):
        ranked = StreamSpec(shards, 5, seed=1, rank=rank, world_size=world_size, shuffle_buffer=32, infinite=False)
        assert _keys(ranked) == [row[rank * 5:(rank + 1) * 5] for row in rows if row[rank * 5:(rank + 1) * 5]]
    flat = [s for row in rows for s in row]
    assert [i for _, i, _ in flat] == list(range(300)) and len({k for _, _, k in flat}) == 300


def _take(loaders: list[PyramidLoader], rows: int) -> list[tuple[int, int, str]]:
    """``rows`` batches from each rank in turn (one optimizer step per row); the samples taken."""
    its, seen = [iter(loader) for loader in loaders], []
    for _ in range(rows):
        for it, loader in zip(its, loaders):
            next(it)
            seen += loader.stream.last_samples
    return seen


def test_resume_on_another_world_size_continues_the_global_order(cfg):
    """4 ranks x 4 samples for 10 rows, then 2 ranks x 8 samples from the saved position, then
    1 rank x 16: the samples a 1-rank run of 16-sample batches takes, across the epoch end too."""
    reference = _take([PyramidLoader(cfg, batch_size=16, seed=3)], 30)
    four = [PyramidLoader(cfg, batch_size=4, seed=3, rank=r, world_size=4) for r in range(4)]
    seen = _take(four, 10)
    states = {json.dumps(loader.state_dict()) for loader in four}
    assert len(states) == 1  # every rank holds the same global position
    state = json.loads(states.pop())
    two = [PyramidLoader(cfg, batch_size=8, seed=3, rank=r, world_size=2) for r in range(2)]
    for loader in two:
        loader.load_state_dict(state)
    seen += _take(two, 12)
    one = PyramidLoader(cfg, batch_size=16, seed=3)
    one.load_state_dict(two[0].state_dict())
    seen += _take([one], 8)
    assert seen == reference and one.state_dict()["samples"] == 30 * 16


def test_epoch_mode_and_val_order(cfg):
    train = PyramidLoader(cfg, batch_size=64, infinite=False)
    sizes = [len(label_B) for label_B, _ in train]
    assert sizes == [64, 64, 64, 64, 44]
    assert train.state_dict()["epoch"] == 1  # the next iter() is the next epoch
    val_a = list(PyramidLoader(cfg, "val", batch_size=25, infinite=False))
    val_b = list(PyramidLoader(cfg, "val", batch_size=25, seed=9, infinite=False))
    assert [len(b[0]) for b in val_a] == [25, 25, 10] and all(same(a, b) for a, b in zip(val_a, val_b))


def test_a_position_of_the_former_per_rank_order_continues_at_its_epoch_start(cfg, caplog):
    loader = PyramidLoader(cfg, batch_size=16, seed=3)
    loader.load_state_dict({"epoch": 2, "batch": 5, "seed": 3, "rank": 0, "world_size": 1, "batch_size": 16})
    assert (loader.state_dict()["epoch"], loader.state_dict()["index"]) == (2, 0)
    assert "predates the global sample order" in caplog.text
