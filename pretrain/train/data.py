"""The trainer's data: this rank's resumable (label_B, codes per scale) loader, and model-ready batches.

Targets (``codes_loader``), picked by ``pyramid.data`` (pretrain/config/pyramid.py):
- VAR's latent/discrete/residual cell reads the precomputed pyramid shards
  (data_pipeline/pyramid_shards/loader.py, ``PyramidLoader``; format: docs/data.md);
- every other cell reads the image shards (data_pipeline/image_shards/loader.py) and encodes
  them on the fly with its codec: pixel pyramids cost a few resamples, and continuous latents
  cannot be stored as codes.
Both carry ``state_dict()/load_state_dict()`` for exact resume.

Model batches (``model_batches``): the shards hold only codes; the teacher-forcing input of scales
1..K-1 is rebuilt here by the codec (for VQ codes VAR's idxBl_to_var_input: lookup, upsample, Phi,
accumulate, area-downsample), so shards stay small and one set serves any transformer.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from pretrain.pyramid.codec import Codec
from pretrain.train.token_loss import Batch


class ImageCodes:
    """Image shards -> (label_B, codec.encode(images)); batches whose images were all bad are skipped
    (the image stream logs and drops bad samples)."""

    def __init__(self, cfg: Any, codec: Codec, split: str, batch_size: int, rank: int, world_size: int,
                 infinite: bool = True, num_workers: int = 0, device: torch.device | str = "cpu"):
        from data_pipeline.image_shards.loader import image_stream

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
        from data_pipeline.pyramid_shards.loader import PyramidLoader

        return PyramidLoader(cfg, split=split, batch_size=micro_batch, rank=rank, world_size=world_size,
                             seed=cfg.seed, infinite=infinite, num_workers=cfg.train.num_workers)
    return ImageCodes(cfg, codec, split, micro_batch, rank, world_size, infinite, cfg.train.num_workers, device)


@torch.no_grad()
def to_model_batch(codec: Any, label_B: torch.Tensor, idx_list: list[torch.Tensor], device: torch.device) -> Batch:
    """(label_B, codes per scale) -> (label_B, x_BLCv_wo_first_l, target_BL). ``codec`` is any pyramid
    codec (pretrain/pyramid/codec.py) or a VQ-VAE: its codes per scale concatenate into the target."""
    idx_list = [idx_Bl.to(device, non_blocking=True) for idx_Bl in idx_list]
    x_BLCv = codec.pyramid_to_var_input(idx_list)
    return label_B.to(device), x_BLCv, torch.cat(idx_list, dim=1)


def model_batches(loader: Any, codec: Any, device: torch.device) -> Iterator[Batch]:
    for label_B, idx_list in loader:
        yield to_model_batch(codec, label_B, idx_list, device)
