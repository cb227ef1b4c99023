"""Sampling N images with every ``sample.*`` setting: the labels, the refinement the config asks
for, and the batched loop behind ``srdd sample``, ``srdd eval``, ``srdd refine-study`` and ``srdd ablate``.

The modules form one chain, each importing only those before it: the sampler core
(sampler.py) <- refinement (refine.py) <- the learned policy (pretrain/policy.py) <- this
module, the only one that reads the ``sample`` config section into hooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import torch

from pretrain.config.fields import ConfigError
from pretrain.policy import PolicyRestart, load_policy
from pretrain.sampling.refine import OnePassMR, RefineCost, RestartSchedule, SelfCorrect
from pretrain.sampling.sampler import Refine, Restart, sample


def class_labels(classes: Sequence[int], n: int, num_classes: int) -> torch.Tensor:
    """n labels cycling over ``classes`` (all classes when empty), sorted so rows group by class."""
    pool = list(classes) or list(range(num_classes))
    bad = [c for c in pool if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"sample.classes={list(classes)}: {bad} outside [0, {num_classes})")
    return torch.tensor(sorted(pool[i % len(pool)] for i in range(n)), dtype=torch.long)


@dataclass
class Refinement:
    """What ``sample.refine`` asks the sampler for: a token hook and/or a restart, and their cost."""

    hook: Optional[Refine] = None
    restart: Optional[Restart] = None
    cost: RefineCost = field(default_factory=RefineCost)


def build_refiner(sample_cfg: Any, model: Any, cost: Optional[RefineCost] = None) -> Refinement:
    """The refinement ``sample.refine`` asks for (docs/sampling.md, "Refinement"); nothing for
    ``refine=none`` or zero rounds."""
    s = sample_cfg
    out = Refinement(cost=cost if cost is not None else RefineCost())
    scales = list(s.refine_scales) or None
    if s.refine == "none" or s.refine_rounds == 0:
        return out
    if s.refine == "sr":
        out.restart = RestartSchedule(s.refine_rounds, s.refine_depth, scales)
    elif s.refine == "mr":
        if not getattr(model, "refine_inputs", False):
            raise ConfigError("sample.refine=mr (self-correction) needs a model trained with "
                              "train.refine_objective=remask; this one has no draft inputs (docs/sampling.md)")
        out.hook = SelfCorrect(s.p_resample, s.refine_rounds, scales, out.cost)
    elif s.refine == "onepass":
        out.hook = OnePassMR(s.p_resample, s.refine_rounds, scales)
    else:
        if not s.policy_ckpt:
            raise ConfigError("sample.refine=policy needs sample.policy_ckpt (a `srdd policy-train` output)")
        policy, meta = load_policy(s.policy_ckpt)
        if meta["depth"] != s.refine_depth:
            raise ConfigError(f"sample.refine_depth={s.refine_depth} but {s.policy_ckpt} was trained on restarts of "
                              f"depth {meta['depth']}; set sample.refine_depth={meta['depth']}")
        out.restart = PolicyRestart(policy, s.refine_rounds, s.refine_depth, scales)
    return out


def sample_in_batches(model: Any, vae: Any, label_N: torch.Tensor, sample_cfg: Any, cost: Optional[RefineCost] = None,
                      stats: Optional[dict[str, Any]] = None) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """``sample`` over ``label_N`` in ``sample_cfg.batch_size`` chunks with every ``sample.*``
    setting (schedule, refinement, guidance, truncation), yielding each chunk's (images, pyramid).

    The chunk that starts at label i is seeded ``seed + i``. ``cost`` (a ``RefineCost``) counts
    the refinement's work; ``stats`` accumulates the chunks' ``sample`` stats: sums, and the max
    for peaks.
    """
    s = sample_cfg
    refinement = build_refiner(s, model, cost)
    for i in range(0, len(label_N), s.batch_size):
        chunk: dict[str, Any] = {}
        yield sample(model, vae, label_N[i:i + s.batch_size], cfg=s.cfg, top_k=s.top_k, top_p=s.top_p,
                     seed=s.seed + i, schedule=list(s.schedule) or None, refine=refinement.hook,
                     restart=refinement.restart, temperature=s.temperature, cfg_schedule=s.cfg_schedule,
                     return_pyramid=True, stats=chunk)
        refinement.cost.add_stats(chunk)
        if stats is not None:
            for key, value in chunk.items():
                if key.endswith("_per_scale"):
                    merged = stats.setdefault(key, {})
                    for k, n in value.items():
                        merged[k] = merged.get(k, 0) + n
                else:
                    stats[key] = max(stats.get(key, value), value) if key.endswith("_peak") else stats.get(key, 0) + value
