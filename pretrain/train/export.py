"""``<run>/model.pt``: the consolidated fp32 transformer for sampling and evaluation.

Format (one ``torch.save`` dict, written atomically)::

    {"format": "srdd-transformer-v1", "config": <resolved config as a dict>,
     "state_dict": {name: fp32 tensor}, "step": int, "tokens": int, "tokenizer_hash": str}

The weights are the module's compute weights (under ZeRO-3 gathered from all ranks), cast to
fp32; for bf16 runs these are the bf16-rounded values the model trained with.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.fields import validate_dataclass
from pretrain.outputs import atomic_path

FORMAT = "srdd-transformer-v1"


def consolidated_state_dict(engine: Any) -> dict[str, torch.Tensor]:
    """Full state dict on every rank, floating tensors in fp32 (integer buffers keep their dtype);
    a collective under ZeRO-3 (parameters are gathered from their partitions), so all ranks call it."""
    module = engine.module

    def copy() -> dict[str, torch.Tensor]:
        return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
                for k, v in module.state_dict().items()}

    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return copy()
    return copy()


def save_model(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], cfg: SRDDConfig,
               step: int, tokens: int, tokenizer_hash: str) -> Path:
    obj = {"format": FORMAT, "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
           "state_dict": state_dict, "step": step, "tokens": tokens, "tokenizer_hash": tokenizer_hash}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, SRDDConfig, dict[str, Any]]:
    """(transformer in eval mode, its run's config, the file's other fields) from a model.pt."""
    from pretrain.model import build_model

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} file")
    cfg = config_from_dict(obj["config"])
    sd = obj["state_dict"]
    vocab_size, z_channels = _head_shapes(sd)
    # self-correction inputs exist iff the run trained them (files from before train.refine_objective have none)
    model = build_model(cfg.model, vocab_size, z_channels, cfg.tokenizer.patch_nums, refine_inputs="draft_flag" in sd)
    model.load_state_dict(sd, strict=True)
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "config")}
    return model.eval(), cfg, meta


def config_from_dict(container: dict[str, Any]) -> SRDDConfig:
    """A saved config dict back into validated dataclasses (schema defaults fill new keys)."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SRDDConfig), container))
    validate_dataclass(cfg)
    return cfg  # type: ignore[return-value]


def _head_shapes(sd: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(V, Cvae) from VAR's layout: head.weight (V, C), word_embed.weight (C, Cvae)."""
    return sd["head.weight"].shape[0], sd["word_embed.weight"].shape[1]
