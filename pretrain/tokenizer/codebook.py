"""Codebook health during tokenizer training: per-scale usage and perplexity, dead-code restarts.

Usage of scale k = fraction of the V codes hit at least once at that scale over the logging
window; perplexity = exp(entropy of the window's hit distribution) (V = uniform use, 1 =
collapse). Hits are summed over ranks. A code no scale has hit since the last restart is
dead: it is re-initialised to a random residual vector the quantiser saw in the current
batch (an "encoder output" at that scale), the usual VQ-VAE restart; rank 0 draws the
vectors and broadcasts them so replicas stay identical.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from pretrain.tokenizer.quantizer import ResidualQuantizer


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class CodebookMonitor:
    def __init__(self, quantizer: ResidualQuantizer):
        self.quantizer = quantizer
        K, V = len(quantizer.patch_nums), quantizer.vocab_size
        self.window_hits_KV = torch.zeros(K, V)  # since the last log record
        self.restart_hits_V = torch.zeros(V)  # since the last dead-code restart
        self.updates = 0

    @torch.no_grad()
    def record(self, idx_list: list[torch.Tensor]) -> None:
        """Count this step's hits (all ranks) and EMA them into ``ema_vocab_hit_SV`` as VAR does."""
        V = self.quantizer.vocab_size
        hits_KV = torch.stack([idx.flatten().bincount(minlength=V).float().cpu() for idx in idx_list])
        hits_KV = _all_reduce(hits_KV)
        self.window_hits_KV += hits_KV
        self.restart_hits_V += hits_KV.sum(0)
        ema = self.quantizer.ema_vocab_hit_SV
        decay = 0.0 if self.updates == 0 else (0.9 if self.updates < 100 else 0.99)
        ema.mul_(decay).add_(hits_KV.to(ema.device) * (1 - decay))
        self.updates += 1

    def summary(self) -> dict[str, list[float]]:
        """Usage and perplexity per scale over the window; resets the window."""
        hits = self.window_hits_KV
        usage = (hits > 0).float().mean(1)
        p = hits / hits.sum(1, keepdim=True).clamp_min(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        self.window_hits_KV = torch.zeros_like(hits)
        return {"usage_per_scale": [round(float(u), 4) for u in usage],
                "perplexity_per_scale": [round(math.exp(float(h)), 2) for h in entropy]}

    @torch.no_grad()
    def restart_dead(self, rests: list[torch.Tensor], generator: torch.Generator) -> int:
        """Re-initialise codes unused since the last call from this batch's residual vectors."""
        weight = self.quantizer.embedding.weight
        dead = (self.restart_hits_V == 0).nonzero().flatten()
        self.restart_hits_V.zero_()
        if len(dead) == 0:
            return 0
        pool_NC = torch.cat([r.detach().float() for r in rests]).cpu()
        pick = torch.randint(len(pool_NC), (len(dead),), generator=generator)
        new_DC = pool_NC[pick].to(weight.device, weight.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(new_DC, src=0)
        weight[dead.to(weight.device)] = new_DC
        return len(dead)
