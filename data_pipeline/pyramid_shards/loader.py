"""``PyramidLoader``: pyramid shards -> (label_B, [idx_Bl per scale]) training batches.

Streams ``<pyramids_dir>/{split}-*.tar`` (format: data_pipeline/pyramid_shards/format.py) through
the deterministic stream of data_pipeline/stream.py: one global sample order (seeded shuffle
buffer on the train split only) cut into per-rank micro-batches, worker split by batch, infinite
or epoch mode, and an exact global position: ``load_state_dict(state_dict())`` after step N yields
the batches an uninterrupted run yields from step N on, also with another number of ranks (same
global batch). With data.flip the train split picks the stored flipped pyramid
for a sample with probability 1/2, drawn from (seed, epoch, key).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from data_pipeline import pyramids_dir
from data_pipeline.pyramid_shards.format import split_scales, unpack_tokens
from data_pipeline.stream import RawSample, ShardStream, StreamSpec, split_shards, stack_labels
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError

Batch = tuple[torch.Tensor, list[torch.Tensor]]


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"data.pyramids_dir={str(directory)!r} has no manifest.json: run `srdd pyramids` "
                          "(a directory without one is missing shards or still being written)")
    return json.loads(path.read_text())


class PyramidLoader:
    """Iterable of (label_B long, idx_list: K tensors B x pn^2 long); see the module docstring."""

    def __init__(self, cfg: SRDDConfig, split: str = "train", batch_size: int = 64, rank: int = 0,
                 world_size: int = 1, seed: int = 0, infinite: bool = True, num_workers: int = 0) -> None:
        directory = pyramids_dir(cfg)
        self.manifest = read_manifest(directory)
        self.patch_nums: tuple[int, ...] = tuple(self.manifest["patch_nums"])
        self.tokenizer_sha256: str = self.manifest["tokenizer_sha256"]
        shards = split_shards(directory, split)
        if not shards:
            raise ConfigError(f"data.pyramids_dir={str(directory)!r} has no {split}-*.tar pyramid shards")
        shuffle = cfg.data.shuffle_buffer if split == "train" else 0
        spec = StreamSpec(shards, batch_size, seed, rank, world_size, shuffle, infinite)
        self.stream = ShardStream(spec, self._decode_fn(split == "train", seed), num_workers)

    def _decode_fn(self, augment: bool, seed: int):
        patch_nums = self.patch_nums

        def decode(raw: list[RawSample]) -> Batch:
            rows = []
            for r in raw:
                tokens_FL = unpack_tokens(r.sample)
                f = zlib.crc32(f"{seed}/{r.epoch}/{r.key}".encode()) % tokens_FL.shape[0] if augment else 0
                rows.append(tokens_FL[f])
            tokens_BL = torch.from_numpy(np.stack(rows).astype(np.int64))
            return stack_labels(raw), split_scales(tokens_BL, patch_nums)

        return decode

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.stream)

    def state_dict(self) -> dict[str, int]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.load_state_dict(state)
