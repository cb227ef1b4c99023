"""Keys/values of earlier scales for KV-cached sampling, kept only as far back as the mask looks.

Scale k attends to scales max(0, k-w)..k (``attn_window`` w; None = all), so after scale k
is final only the last w scales' keys/values can still be read: block-causal keeps every
scale, window w keeps w, window 0 none. A scale pass first *stages* its own
keys/values (``extend``); ``commit`` makes them part of the prefix once the scale's tokens
are final. A pass that must not become prefix (self-correction's draft pass: scale k's keys
are those of its input, not of a draft) attends without staging (``stage=False``).

Restart (docs/sampling.md) re-enters the chain for some rows at an earlier step: ``select``
copies those rows' cache (the first n scales, when the cache still holds them: block-causal
only), and ``assign`` writes the regenerated rows back.
"""
from __future__ import annotations

from typing import Optional

import torch

from pretrain.model.attention import KVExtend

KV = tuple[torch.Tensor, torch.Tensor]


class KVCache:
    def __init__(self, depth: int, attn_window: Optional[int]):
        self.attn_window = attn_window
        self.kept: list[list[KV]] = [[] for _ in range(depth)]  # per layer, oldest first
        self.staged: list[Optional[KV]] = [None] * depth
        self.committed = 0  # scales committed so far (window caches hold only the last w of them)
        self.bytes_peak = 0  # max over scales of all layers' attended keys+values (prefix + own scale)

    def extend(self, layer: int, stage: bool = True) -> KVExtend:
        """The attention hook of one layer: stage the pass's keys/values (unless ``stage`` is
        False), return prefix + them."""
        def kv_extend(k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> KV:
            if stage:
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
            if self.attn_window is not None and len(self.kept[layer]) > self.attn_window:
                del self.kept[layer][:len(self.kept[layer]) - self.attn_window]
        self.committed += 1
        self.staged = [None] * len(self.staged)

    def holds_first(self, n: int) -> bool:
        """Whether the keys/values of scales 0..n-1 are all still held."""
        held = len(self.kept[0]) if self.kept else 0
        return held == self.committed and held >= n

    def select(self, rows: torch.Tensor, n: int) -> "KVCache":
        """A cache of rows ``rows`` holding scales 0..n-1 of this one (``holds_first(n)`` must hold)."""
        if not self.holds_first(n):
            raise RuntimeError(f"KVCache.select: scales 0..{n - 1} are not all held (window {self.attn_window})")
        out = KVCache(len(self.kept), self.attn_window)
        out.kept = [[(k[rows], v[rows]) for k, v in layer[:n]] for layer in self.kept]
        out.committed = n
        return out

    def assign(self, rows: torch.Tensor, other: "KVCache") -> None:
        """Rows ``rows`` of every held scale take ``other``'s keys/values (the same number held)."""
        if any(len(a) != len(b) for a, b in zip(self.kept, other.kept)):
            raise RuntimeError(f"KVCache.assign: {len(other.kept[0])} held scales into a cache holding {len(self.kept[0])}")
        for layer, (mine, theirs) in enumerate(zip(self.kept, other.kept)):
            merged = []
            for (k, v), (k_new, v_new) in zip(mine, theirs):
                k, v = k.clone(), v.clone()
                k[rows], v[rows] = k_new, v_new
                merged.append((k, v))
            self.kept[layer] = merged
