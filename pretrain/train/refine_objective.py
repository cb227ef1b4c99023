"""``train.refine_objective=remask``: the self-correction objective beside VAR's token loss.

Self-correction (``sample.refine=mr``, docs/sampling.md) re-predicts scale k's tokens from a
state holding a draft of scale k in which the doubtful tokens were removed. To learn that, every
micro-batch also runs a *draft stream* (``Transformer.forward(..., draft=...)``): for each sample
and scale, a corrupted copy of the true tokens enters scale k's input (the kept tokens' contribution
to the state, the tokenizer's ``draft_delta``, plus the learned draft and mask embeddings), and the
stream is trained to predict the true tokens at every position of the scale, as masked diffusion
trains its denoiser:

- a fraction r ~ U(0, 1) of the scale's tokens (drawn per sample and scale) is removed (masked);
- of the rest, ``train.refine_replace`` are replaced by a draw from the model's own distribution
  at the true state (a no-grad teacher-forced pass; sampling's drafts are model draws, so the
  stream must not trust every kept token), the others stay true.

Objective per micro-batch = VAR's smoothed CE on the clean stream + the same CE on the draft
stream (equal weights). Logged: ``refine_loss`` / ``refine_acc`` (+ per scale) of the draft stream,
plain CE, beside the clean stream's ``loss``. Cost: the draft stream is a second forward/backward
of the same attended FLOPs, plus one forward when ``refine_replace`` > 0 (pretrain/model/flops.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from pretrain.train.task import StepLoss
from pretrain.train.token_loss import Batch, LossFn, ScaleStats, TokenObjective, token_losses


def corrupt_drafts(target_BL: torch.Tensor, bounds: Sequence[tuple[int, int]], replace: float,
                   model_draw_BL: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(draft tokens, removed mask), both (B, L): per sample and scale a U(0, 1) fraction removed; of
    the kept tokens a ``replace`` fraction taken from ``model_draw_BL``, the rest true."""
    B, L = target_BL.shape
    ratio_BL = torch.cat([torch.rand(B, 1, device=target_BL.device).expand(B, e - b) for b, e in bounds], dim=1)
    masked_BL = torch.rand(B, L, device=target_BL.device) < ratio_BL
    draft_BL = target_BL
    if replace > 0 and model_draw_BL is not None:
        swap_BL = ~masked_BL & (torch.rand(B, L, device=target_BL.device) < replace)
        draft_BL = torch.where(swap_BL, model_draw_BL, target_BL)
    return draft_BL, masked_BL


class RemaskObjective(TokenObjective):
    """VAR's token loss plus the draft stream's (module docstring); engine ``model`` must have been
    built with ``refine_inputs``. ``codec`` is the VAR cell's (its VQ-VAE computes the draft deltas)."""

    def __init__(self, engine: Any, stats: ScaleStats, label_smoothing: float, codec: Any,
                 patch_nums: Sequence[int], replace: float, loss_fn: LossFn = token_losses):
        super().__init__(engine, stats, label_smoothing, loss_fn)
        self.codec, self.patch_nums, self.replace = codec, tuple(patch_nums), replace
        self.draft_stats = ScaleStats(self.patch_nums)

    @torch.no_grad()
    def drafts(self, label_B: torch.Tensor, x_BLCv: torch.Tensor, target_BL: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(delta_BLCv, masked_BL): the corrupted drafts' inputs for every scale."""
        model_draw_BL = None
        if self.replace > 0:
            probs_BLV = self.engine(label_B, x_BLCv).float().softmax(-1)
            model_draw_BL = torch.multinomial(probs_BLV.flatten(0, 1), 1).view(target_BL.shape)
        bounds = self.stats.bounds
        draft_BL, masked_BL = corrupt_drafts(target_BL, bounds, self.replace, model_draw_BL)
        delta_BLCv = torch.cat([self.codec.draft_delta(draft_BL[:, b:e], ~masked_BL[:, b:e], k, self.patch_nums)
                                for k, (b, e) in enumerate(bounds)], dim=1)
        return delta_BLCv, masked_BL

    def loss(self, batch: Batch) -> StepLoss:
        label_B, x_BLCv, target_BL = batch
        draft = self.drafts(label_B, x_BLCv, target_BL)
        logits_BLV, draft_logits_BLV = self.engine(label_B, x_BLCv, draft=draft)
        objective, nll_BL, correct_BL = self.loss_fn(logits_BLV, target_BL, self.label_smoothing)
        draft_objective, draft_nll_BL, draft_correct_BL = self.loss_fn(draft_logits_BLV, target_BL, self.label_smoothing)
        return StepLoss({"model": objective + draft_objective},
                        {"nll_BL": nll_BL, "correct_BL": correct_BL,
                         "draft_nll_BL": draft_nll_BL, "draft_correct_BL": draft_correct_BL})

    def accumulate(self, out: StepLoss) -> None:
        super().accumulate(out)
        self.draft_stats.add(out.metrics["draft_nll_BL"], out.metrics["draft_correct_BL"])

    def record(self, device: torch.device) -> dict[str, Any]:
        """The draft stream's means since the last record, all-reduced over ranks."""
        return {f"refine_{k}": v for k, v in self.draft_stats.reduce(device).items()}
