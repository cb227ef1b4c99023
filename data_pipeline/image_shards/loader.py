"""``image_loader``: image shards -> (img_B3HW float32 in [-1, 1], label_B long) batches.

Used by tokenizer training, the feature network and evaluation. Preprocessing follows VAR:
shorter side to round(mid_reso * resolution), crop to resolution (random for the train split
when data.random_crop, else centre), horizontal flip for the train split when data.flip;
augmentation draws depend on (seed, epoch, key), so a resumed stream repeats them.
"""
from __future__ import annotations

import logging
import zlib
from typing import Iterator

import numpy as np
import torch

from data_pipeline import shards_dir
from data_pipeline.image_shards.decode import IMAGE_EXTS, BadInput, decode_image, preprocess, to_pm1
from data_pipeline.stream import RawSample, ShardStream, StreamSpec, split_shards
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError

log = logging.getLogger("srdd.data")


def _decoder(cfg: SRDDConfig, split: str, seed: int):
    d = cfg.data
    augment = split == "train"

    def decode(raw: list[RawSample]) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, labels = [], []
        for key, sample, epoch, _ in raw:
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            try:
                img, _ = decode_image(sample[ext] if ext else b"")
            except BadInput as e:
                log.warning("image shard sample %s skipped: %s", key, e)
                continue
            arr, _ = preprocess(img, d.resolution, d.mid_reso, augment and d.random_crop, seed * 1000003 + epoch, key)
            if augment and d.flip and zlib.crc32(f"{seed}/{epoch}/{key}".encode()) & 1:
                arr = arr[:, ::-1]
            imgs.append(arr)
            labels.append(int(sample["cls"]))
        if not imgs:  # every sample of the batch was bad
            return torch.empty(0, 3, d.resolution, d.resolution), torch.empty(0, dtype=torch.long)
        return to_pm1(np.ascontiguousarray(np.stack(imgs))), torch.tensor(labels, dtype=torch.long)

    return decode


def image_stream(cfg: SRDDConfig, split: str = "train", batch_size: int = 64, rank: int = 0, world_size: int = 1,
                 seed: int = 0, infinite: bool = True, num_workers: int = 0) -> ShardStream:
    """The resumable stream behind ``image_loader`` (``state_dict``/``load_state_dict``)."""
    shards = split_shards(shards_dir(cfg), split)
    if not shards:
        raise ConfigError(f"data.shards_dir={str(shards_dir(cfg))!r} has no {split}-*.tar image shards; run `srdd shards` first")
    spec = StreamSpec(shards, batch_size, seed, rank, world_size, cfg.data.shuffle_buffer if split == "train" else 0,
                      infinite)
    return ShardStream(spec, _decoder(cfg, split, seed), num_workers)


def image_loader(cfg: SRDDConfig, split: str = "train", batch_size: int = 64, rank: int = 0, world_size: int = 1,
                 seed: int = 0, infinite: bool = True, num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (img_B3HW in [-1, 1] at data.resolution, label_B). The val split is not shuffled;
    num_workers > 0 decodes in worker processes (same batches, same order)."""
    return iter(image_stream(cfg, split, batch_size, rank, world_size, seed, infinite, num_workers))
