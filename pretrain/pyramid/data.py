"""Training targets for any pyramid cell: (label_B, codes per scale) batches, resumable.

``codes_loader`` picks the source by ``pyramid.data`` (pretrain/pyramid/config.py): VAR's
precomputed pyramid shards (data_pipeline.loader.PyramidLoader) for the latent/discrete/residual
cell, else the image shards (data_pipeline.image_loader's stream) encoded on the fly by the
codec: pixel pyramids cost a few resamples, and continuous latents cannot be stored as codes.
Both loaders yield what ``pretrain.train.data.model_batches`` consumes and carry
``state_dict()/load_state_dict()`` for exact resume.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from pretrain.pyramid.codec import Codec


class ImageCodes:
    """Image shards -> (label_B, codec.encode(images)); batches whose images were all bad are skipped
    (the image stream logs and drops bad samples)."""

    def __init__(self, cfg: Any, codec: Codec, split: str, batch_size: int, rank: int, world_size: int,
                 infinite: bool = True, num_workers: int = 0, device: torch.device | str = "cpu"):
        from data_pipeline.image_loader import image_stream

        self.codec, self.device = codec, torch.device(device)
        self.patch_nums = tuple(cfg.tokenizer.patch_nums)
        self.stream = image_stream(cfg, split, batch_size, rank, world_size, cfg.seed, infinite, num_workers)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        for img_B3HW, label_B in self.stream:
            if len(label_B):
                yield label_B, self.codec.encode(img_B3HW.to(self.device))

    def state_dict(self) -> dict[str, int]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.load_state_dict(state)


def codes_loader(cfg: Any, codec: Codec, split: str, micro_batch: int, rank: int, world_size: int,
                 infinite: bool = True, device: torch.device | str = "cpu") -> Any:
    """The loader of this cell's training targets (see the module docstring)."""
    if cfg.pyramid.uses_pyramid_shards:
        from data_pipeline.loader import PyramidLoader

        return PyramidLoader(cfg, split=split, batch_size=micro_batch, rank=rank, world_size=world_size,
                             seed=cfg.seed, infinite=infinite, num_workers=cfg.train.num_workers)
    return ImageCodes(cfg, codec, split, micro_batch, rank, world_size, infinite, cfg.train.num_workers, device)
