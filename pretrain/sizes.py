"""The one named table of transformer sizes.

VAR's rule (arXiv 2404.02905, sec. 4): width = 64 * depth, heads = depth,
mlp_ratio = 4. d16..d30 are VAR's released models; d1..d8 are a ladder of tiny
sizes that train in minutes on 2 CPU cores, for the embedded scaling study.
``gpus`` and ``nodes`` are the SLURM defaults `slurm/train_size.sh` requests.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    depth: int
    nodes: int = 1
    gpus: int = 0  # per node; 0 = CPU ranks (gloo), as on a laptop or CI box
    time_min: int = 60

    @property
    def width(self) -> int:
        return 64 * self.depth

    @property
    def heads(self) -> int:
        return self.depth


SIZES: dict[str, Size] = {
    "d1": Size(1, time_min=20),
    "d2": Size(2, time_min=20),
    "d3": Size(3, time_min=30),
    "d4": Size(4, time_min=30),
    "d6": Size(6, time_min=60),
    "d8": Size(8, time_min=60),
    "d16": Size(16, nodes=1, gpus=8, time_min=48 * 60),
    "d20": Size(20, nodes=2, gpus=8, time_min=48 * 60),
    "d24": Size(24, nodes=4, gpus=8, time_min=48 * 60),
    "d30": Size(30, nodes=8, gpus=8, time_min=48 * 60),
}
