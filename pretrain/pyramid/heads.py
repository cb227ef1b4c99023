"""What the transformer's output head means for each kind of code: its distribution (loss,
guidance, probabilities, draw), the one place training and sampling both read it from.

The transformer is unchanged across cells: its ``head`` is a Linear(width, ``out_dim``) (built
by passing ``out_dim`` as ``build_model``'s ``vocab_size``), and a head object here reads its
output ``out_BLD``:

- ``CategoricalHead(V)``: VAR. One code in [0, V) per token; CE with label smoothing
  (``token_losses``, what ``srdd train`` optimises), CFG on logits, temperature / top-k / top-p
  (``truncated_probs``) then one multinomial draw (``draw_tokens``), as VAR's
  ``sample_with_top_k_top_p_``. A VQ-VAE has no ``head``; the sampler reads it as this one.
- ``FactorisedHead(D, levels)``: D independent uniform-quantiser levels per token (pixel space,
  discrete: a token is a p x p x 3 patch, D = 3 p^2 values); ``out_dim = D * levels`` logits.
  Loss = CE per value averaged over the D values (nats per value); ``acc`` = fraction of values
  whose argmax is right. CFG on logits; the draw is one multinomial per value.
- ``GaussianHead(D)``: continuous codes, a diagonal Gaussian per token: ``out_dim = 2 D`` =
  (mean, log-variance). Loss = Gaussian NLL per value in nats, averaged over D, log-variance
  clamped to [LOGVAR_MIN, LOGVAR_MAX] so the NLL cannot run off to -inf on a constant value.
  CFG moves the means like logits, (1 + t) mu_c - t mu_u, and keeps the conditional variance;
  the draw is mu + temperature * sigma * eps (top-k / top-p do not apply). ``acc`` is NaN: a
  regression has no argmax.

Every ``loss`` returns (objective, nll_BL, correct_BL) like ``token_losses``: the differentiable
objective, then per-token loss and hits (detached) for the train area's ScaleStats. Loss (VAR,
arXiv 2404.02905): every token weighted equally, label smoothing in the optimised objective only;
the logged ``loss`` is the plain cross-entropy (docs/training.md).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

LOGVAR_MIN, LOGVAR_MAX = -9.0, 4.0
Losses = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def token_losses(logits_BLV: torch.Tensor, target_BL: torch.Tensor, label_smoothing: float) -> Losses:
    """(objective, nll_BL, correct_BL): smoothed CE mean (differentiable), then per-token plain
    CE and argmax hits (detached). One log_softmax serves both, in fp32 even under bf16."""
    logp_BLV = F.log_softmax(logits_BLV.float(), dim=-1)
    nll_BL = -logp_BLV.gather(-1, target_BL.unsqueeze(-1)).squeeze(-1)
    uniform_BL = -logp_BLV.mean(-1)  # CE against the uniform distribution (the smoothing term)
    objective = ((1.0 - label_smoothing) * nll_BL + label_smoothing * uniform_BL).mean()
    correct_BL = logits_BLV.detach().argmax(-1).eq(target_BL)
    return objective, nll_BL.detach(), correct_BL


def truncated_probs(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                    temperature: float = 1.0) -> torch.Tensor:
    """Softmax after temperature, top-k (keep the k largest) and top-p (keep the smallest set of
    most likely tokens whose mass reaches top_p; the most likely token always stays)."""
    logits_BlV = logits_BlV.float() / temperature if temperature != 1.0 else logits_BlV.float()
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth_Bl1 = logits_BlV.topk(top_k, dim=-1).values[..., -1:]
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_Bl1, -torch.inf)
    if top_p > 0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1)                   # ascending
        drop_BlV = sorted_BlV.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p  # the unlikely tail
        drop_BlV[..., -1] = False
        logits_BlV = logits_BlV.masked_fill(drop_BlV.scatter(-1, order_BlV, drop_BlV), -torch.inf)
    return logits_BlV.softmax(dim=-1)


def draw_tokens(probs_BlV: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One multinomial draw per token, (B, l)."""
    B, l, V = probs_BlV.shape
    return torch.multinomial(probs_BlV.view(-1, V), 1, replacement=True, generator=generator).view(B, l)


def guide_linear(cond: torch.Tensor, uncond: torch.Tensor, t: float) -> torch.Tensor:
    """Classifier-free guidance on logits (VAR): (1 + t) cond - t uncond."""
    return (1 + t) * cond - t * uncond


class CategoricalHead:
    """One code per token, V logits (VAR)."""

    supports_refine = True

    def __init__(self, vocab_size: int):
        self.out_dim = vocab_size

    def loss(self, logits_BLV: torch.Tensor, target_BL: torch.Tensor, label_smoothing: float) -> Losses:
        return token_losses(logits_BLV, target_BL, label_smoothing)

    guide = staticmethod(guide_linear)

    def probs(self, logits_BlV: torch.Tensor, top_k: int, top_p: float, temperature: float) -> torch.Tensor:
        return truncated_probs(logits_BlV, top_k, top_p, temperature)

    def draw(self, logits_BlV: torch.Tensor, generator: Optional[torch.Generator], top_k: int, top_p: float,
             temperature: float) -> torch.Tensor:
        return draw_tokens(self.probs(logits_BlV, top_k, top_p, temperature), generator)


class FactorisedHead:
    """D independent categorical values per token, ``levels`` logits each."""

    supports_refine = False  # refinement hooks re-draw one categorical per token

    def __init__(self, values: int, levels: int):
        self.D, self.levels = values, levels
        self.out_dim = values * levels

    def _split(self, out_BLX: torch.Tensor) -> torch.Tensor:
        return out_BLX.float().unflatten(-1, (self.D, self.levels))  # (B, L, D, levels)

    def loss(self, out_BLX: torch.Tensor, target_BLD: torch.Tensor, label_smoothing: float) -> Losses:
        logp_BLDn = F.log_softmax(self._split(out_BLX), dim=-1)
        nll_BLD = -logp_BLDn.gather(-1, target_BLD.unsqueeze(-1)).squeeze(-1)
        objective = ((1.0 - label_smoothing) * nll_BLD - label_smoothing * logp_BLDn.mean(-1)).mean()
        correct_BL = logp_BLDn.detach().argmax(-1).eq(target_BLD).float().mean(-1)
        return objective, nll_BLD.detach().mean(-1), correct_BL

    guide = staticmethod(guide_linear)

    def probs(self, out_BlX: torch.Tensor, top_k: int, top_p: float, temperature: float) -> torch.Tensor:
        B, l, _ = out_BlX.shape
        return truncated_probs(self._split(out_BlX).reshape(B, l * self.D, self.levels), top_k, top_p, temperature)

    def draw(self, out_BlX: torch.Tensor, generator: Optional[torch.Generator], top_k: int, top_p: float,
             temperature: float) -> torch.Tensor:
        B, l, _ = out_BlX.shape
        return draw_tokens(self.probs(out_BlX, top_k, top_p, temperature), generator).view(B, l, self.D)


class GaussianHead:
    """A diagonal Gaussian over the D values of a token: (mean, log-variance)."""

    supports_refine = False

    def __init__(self, values: int):
        self.D = values
        self.out_dim = 2 * values

    def _split(self, out_BLX: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu_BLD, logvar_BLD = out_BLX.float().chunk(2, dim=-1)
        return mu_BLD, logvar_BLD.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def loss(self, out_BLX: torch.Tensor, target_BLD: torch.Tensor, label_smoothing: float) -> Losses:
        """Gaussian NLL in nats per value (label smoothing has no meaning here and is ignored)."""
        mu_BLD, logvar_BLD = self._split(out_BLX)
        nll_BLD = 0.5 * (logvar_BLD + (target_BLD.float() - mu_BLD).square() * torch.exp(-logvar_BLD)
                         + math.log(2 * math.pi))
        nll_BL = nll_BLD.mean(-1)
        return nll_BL.mean(), nll_BL.detach(), torch.full_like(nll_BL, float("nan"))

    def guide(self, cond_BlX: torch.Tensor, uncond_BlX: torch.Tensor, t: float) -> torch.Tensor:
        mu_c, logvar_c = cond_BlX.chunk(2, dim=-1)
        mu_u, _ = uncond_BlX.chunk(2, dim=-1)
        return torch.cat((guide_linear(mu_c, mu_u, t), logvar_c), dim=-1)

    def draw(self, out_BlX: torch.Tensor, generator: Optional[torch.Generator], top_k: int, top_p: float,
             temperature: float) -> torch.Tensor:
        mu_BlD, logvar_BlD = self._split(out_BlX)
        eps_BlD = torch.randn(mu_BlD.shape, generator=generator, device=mu_BlD.device)
        return mu_BlD + temperature * torch.exp(0.5 * logvar_BlD) * eps_BlD


Head = CategoricalHead | FactorisedHead | GaussianHead
