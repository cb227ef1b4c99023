"""Token and compute accounting: what a run's budget means in steps, tokens and FLOPs.

A token is one position of the code pyramid: a sample carries L = sum(pn^2) of them, all of
which are predicted (VAR's loss covers every scale). Training FLOPs per sample are 3x the
forward FLOPs (backward ~ 2x forward), counted by the model area's helper
``pretrain.model.flops.train_flops_per_sample``: 2 * N_nonembed per token for the matmuls plus
4 * depth * width * attended_keys for attention under the run's mask (formula documented
there).
"""
from __future__ import annotations

import math
from typing import Sequence

from pretrain.config.train import TrainConfig


def tokens_per_sample(patch_nums: Sequence[int]) -> int:
    return sum(pn * pn for pn in patch_nums)


def total_steps(train: TrainConfig, tokens_per_sample: int) -> int:
    """``train.tokens`` > 0 sets the step count (rounded up); otherwise ``train.max_steps``."""
    if train.tokens > 0:
        return max(1, math.ceil(train.tokens / (train.batch_size * tokens_per_sample)))
    return train.max_steps
