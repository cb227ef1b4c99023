"""Sampling N images with every ``sample.*`` setting: the labels, the refine hook the config asks
for, and the batched loop behind ``srdd sample``, ``srdd eval`` and ``srdd ablate``.

The modules form one chain, each importing only those before it: the sampler core
(sampler.py) <- refinement hooks (refine.py) <- the learned policy (pretrain/policy.py) <- this
module, the only one that reads the ``sample`` config section into hooks.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch

from pretrain.config.fields import ConfigError
from pretrain.policy import load_policy
from pretrain.sampling.refine import Refiner, RefineCost, Selector, select_all, select_below
from pretrain.sampling.sampler import sample


def class_labels(classes: Sequence[int], n: int, num_classes: int) -> torch.Tensor:
    """n labels cycling over ``classes`` (all classes when empty), sorted so rows group by class."""
    pool = list(classes) or list(range(num_classes))
    bad = [c for c in pool if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"sample.classes={list(classes)}: {bad} outside [0, {num_classes})")
    return torch.tensor(sorted(pool[i % len(pool)] for i in range(n)), dtype=torch.long)


def build_refiner(sample_cfg: Any, model: Any = None, cost: Optional[RefineCost] = None) -> Optional[Refiner]:
    """The hook ``sample.refine`` asks for (None for ``refine=none`` or zero rounds)."""
    if sample_cfg.refine == "none" or sample_cfg.refine_rounds == 0:
        return None
    if sample_cfg.refine == "sr":
        select: Selector = select_all
    elif sample_cfg.refine == "mr":
        select = select_below(sample_cfg.p_resample)
    else:
        if not sample_cfg.policy_ckpt:
            raise ConfigError("sample.refine=policy needs sample.policy_ckpt (a `srdd policy-train` output)")
        select = load_policy(sample_cfg.policy_ckpt).selector()
    return Refiner(select, sample_cfg.refine_rounds, sample_cfg.refine_scales or None, model, cost)


def sample_in_batches(model: Any, vae: Any, label_N: torch.Tensor, sample_cfg: Any, cost: Any = None,
                      stats: Optional[dict[str, Any]] = None) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """``sample`` over ``label_N`` in ``sample_cfg.batch_size`` chunks with every ``sample.*``
    setting (schedule, refinement, guidance, truncation), yielding each chunk's (images, pyramid).

    The chunk that starts at label i is seeded ``seed + i``. ``cost`` (a ``RefineCost``) counts
    the refiner's work; ``stats`` accumulates the chunks' ``sample`` stats: sums, and the max
    for peaks.
    """
    s = sample_cfg
    refine = build_refiner(s, model, cost)
    for i in range(0, len(label_N), s.batch_size):
        chunk: dict[str, Any] = {}
        yield sample(model, vae, label_N[i:i + s.batch_size], cfg=s.cfg, top_k=s.top_k, top_p=s.top_p,
                     seed=s.seed + i, schedule=list(s.schedule) or None, refine=refine, temperature=s.temperature,
                     cfg_schedule=s.cfg_schedule, return_pyramid=True, stats=chunk)
        if stats is not None:
            for key, value in chunk.items():
                stats[key] = max(stats.get(key, value), value) if key.endswith("_peak") else stats.get(key, 0) + value
