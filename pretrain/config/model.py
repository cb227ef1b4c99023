"""Config section ``model``: transformer size and attention mask."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pretrain.config.fields import ConfigError, bounded, choice, doc
from pretrain.sizes import SIZES

# Named mask presets (docs/model.md, "Attention window"): var = block-causal (full prefix),
# srdd = block-diagonal Markovian mask (own scale only, window 0).
MASK_PRESETS: dict[str, Optional[int]] = {"var": None, "srdd": 0}


@dataclass
class ModelConfig:
    size: str = choice("d2", tuple(SIZES), help="row of pretrain/sizes.py")
    mask: str = choice("var", ("var", "srdd", "window"), help="var = block-causal, srdd = Markovian (window 0), window = use attn_window")
    attn_window: Optional[int] = doc(None, "with mask=window: scale k sees scales k-w..k")
    attn_impl: str = choice("auto", ("auto", "dense"), help="teacher-forcing attention: auto = only the pairs the mask allows (per-scale tiles, docs/model.md), dense = additive -inf mask over all L x L (the reference); same outputs and checkpoints")
    num_classes: int = bounded(10, min=1, help="class-conditional labels (+1 null class for CFG)")
    cond_drop: float = bounded(0.1, min=0.0, max=1.0, help="class-condition dropout for CFG (training only)")
    mlp_ratio: float = bounded(4.0, min=0.5)
    drop_path: float = bounded(0.0, min=0.0, max=1.0)
    init_std: float = bounded(0.02, min=0.0, help="truncated-normal init std of linear layers and embeddings; 0 = VAR's automatic sqrt(1/(3*width))")

    def validate(self, prefix: str) -> None:
        if self.mask == "window":
            if self.attn_window is None or self.attn_window < 0:
                raise ConfigError(f"{prefix}attn_window={self.attn_window!r}: mask=window needs an int >= 0")
        elif self.attn_window is not None and self.attn_window != MASK_PRESETS[self.mask]:
            raise ConfigError(
                f"{prefix}attn_window={self.attn_window!r} contradicts {prefix}mask={self.mask!r} "
                f"(window {MASK_PRESETS[self.mask]}); use {prefix}mask=window to set a window")

    @property
    def window(self) -> Optional[int]:
        """The attention window this config resolves to (None = block-causal)."""
        return self.attn_window if self.mask == "window" else MASK_PRESETS[self.mask]
