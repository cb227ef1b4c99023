"""Keys/values of earlier scales for KV-cached sampling, kept only as far back as the mask looks.

Scale k attends to scales max(0, k-w)..k (``attn_window`` w; None = all), so after scale k
is final only the last w scales' keys/values can still be read: block-causal keeps every
scale, window w keeps w, window 0 keeps none. A scale pass first *stages* its own
keys/values (``extend``); ``commit`` makes them part of the prefix once the scale's tokens
are final, so a refinement hook can re-run the same pass without appending twice.
"""
from __future__ import annotations

from typing import Optional

import torch

from pretrain.model.attention import KVExtend


class KVCache:
    def __init__(self, depth: int, attn_window: Optional[int]):
        self.attn_window = attn_window
        self.kept: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(depth)]  # per layer, oldest first
        self.staged: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = [None] * depth
        self.bytes_peak = 0  # max over scales of all layers' attended keys+values (prefix + own scale)

    def extend(self, layer: int) -> KVExtend:
        """The attention hook of one layer: stage the pass's keys/values, return prefix + them."""
        def kv_extend(k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.staged[layer] = (k_BHlc, v_BHlc)
            prefix = self.kept[layer]
            if not prefix:
                return k_BHlc, v_BHlc
            return (torch.cat([k for k, _ in prefix] + [k_BHlc], dim=2),
                    torch.cat([v for _, v in prefix] + [v_BHlc], dim=2))
        return kv_extend

    def bytes_attended(self) -> int:
        segments = [kv for layer in self.kept for kv in layer] + [kv for kv in self.staged if kv is not None]
        return sum(t.numel() * t.element_size() for kv in segments for t in kv)

    def commit(self) -> None:
        """The staged scale becomes prefix; scales no later query can see are dropped."""
        self.bytes_peak = max(self.bytes_peak, self.bytes_attended())
        for layer, kv in enumerate(self.staged):
            if kv is None:
                raise RuntimeError(f"KVCache.commit: layer {layer} ran no pass since the last commit")
            self.kept[layer].append(kv)
            if self.attn_window is not None:
                del self.kept[layer][:max(0, len(self.kept[layer]) - self.attn_window)]
        self.staged = [None] * len(self.staged)
