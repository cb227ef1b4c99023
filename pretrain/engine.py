"""The one place a DeepSpeed engine is built from the config (tokenizer and transformer alike).

Optimiser: AdamW, betas/weight decay from ``train`` (VAR: 0.9/0.95, 0.05), no
decay on biases, norms, embeddings and 1-D parameters. ``torch_adam`` avoids the
compiled CPU Adam op, so it runs on any machine (docs/training.md, "One run"). Learning
rate: VAR's rule lr = lr_base * global_batch / 256 unless ``lr_peak`` is set,
linear warmup then cosine / linear decay to ``lr_end_ratio * peak``.

Precision: ``train.precision=bf16`` runs the model in bf16 while DeepSpeed's bf16 optimizer
keeps fp32 master weights; attention softmax (fused kernels accumulate in fp32) and the loss
(``Transformer.logits`` returns fp32) stay fp32. ``train.compile`` compiles the module's
forward in place (``nn.Module.compile``: state-dict keys and checkpoints unchanged).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from pretrain import dist as _dist  # noqa: F401  (sets DS_ACCELERATOR before deepspeed is imported)
from pretrain.config.fields import ConfigError
from pretrain.config.train import TrainConfig


def peak_lr(train: TrainConfig) -> float:
    return train.lr_peak if train.lr_peak is not None else train.lr_base * train.batch_size / 256


def lr_multiplier(train: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Step -> lr / lr_peak: linear warmup, then the configured decay."""
    warmup = int(round(train.warmup_frac * total_steps))
    end = train.lr_end_ratio

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if train.lr_schedule == "constant" or total_steps <= warmup:
            return 1.0
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if train.lr_schedule == "linear":
            return end + (1.0 - end) * (1.0 - t)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return fn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; biases, norms, embeddings and scalars get none (as VAR)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "embed" in name or "norm" in name or name.endswith("bias") or "pos_" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def deepspeed_config(train: TrainConfig, world_size: int, lr: float | None = None) -> dict[str, Any]:
    micro, rem = divmod(train.batch_size, world_size * train.grad_accum)
    if rem or micro == 0:
        raise ConfigError(
            f"train.batch_size={train.batch_size} must be a positive multiple of world_size*grad_accum "
            f"= {world_size}*{train.grad_accum}")
    return {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": train.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": peak_lr(train) if lr is None else lr, "betas": list(train.betas),
                       "weight_decay": train.weight_decay, "eps": 1e-8, "torch_adam": True},
        },
        "zero_optimization": {"stage": train.zero_stage},
        "bf16": {"enabled": train.precision == "bf16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def build_engine(model: nn.Module, train: TrainConfig, total_steps: int, world_size: int,
                 lr: float | None = None, optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
                 schedule: Callable[[torch.optim.Optimizer], Any] | None = None) -> Any:
    """Wrap ``model`` in a DeepSpeed engine with AdamW and the warmup/decay scheduler.

    A task with its own recipe (the resampling policy's Adam, the feature network's one-cycle
    AdamW) passes ``optimizer`` (module -> torch optimizer) and ``schedule`` (optimizer -> lr
    scheduler or None); DeepSpeed then steps that optimizer, still with ``train``'s batch, ZeRO
    stage, precision and clipping."""
    import deepspeed

    config = deepspeed_config(train, world_size, lr)
    if train.precision == "bf16":
        # DeepSpeed casts parameters only; floating buffers (e.g. a zero key bias, the additive
        # attention mask) must follow, or stage-0 bf16 mixes dtypes in the forward.
        model = model.to(torch.bfloat16)
    if train.compile:
        model.compile()
    if optimizer is None:
        multiplier = lr_multiplier(train, total_steps)
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=param_groups(model, train.weight_decay), config=config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, multiplier))
        return engine
    del config["optimizer"]
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer(model), config=config,
                                           lr_scheduler=schedule)
    return engine
