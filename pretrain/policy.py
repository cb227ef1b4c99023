"""The learned refinement policy at sampling time: which sample gets a restart round at which scale.

SRDD names learned resampling policies (secondary sources); this is the platform's version, built
on restart (pretrain/sampling/refine.py). A small MLP reads, per sample and scale, uncertainty
statistics of the distribution the scale was drawn from - normalised entropy (mean, max over the
scale's tokens), top-1 minus top-2 margin (mean, min), the drawn tokens' probability (mean, min) -
plus the scale index k/(K-1) and the guidance weight t_k, and predicts the quality gain of one
restart round there minus its FLOPs penalty. ``sample.refine=policy`` restarts exactly the
(sample, scale) pairs it predicts positive, ``refine_rounds`` rounds each, at the restart depth the
policy was trained for.

Its training targets need the evaluation classifier, so `srdd policy-train` lives in the analysis
layer (analysis/policy_train.py, docs/sampling.md "Learned policy"); this module only holds what
sampling needs: the features, the network, the restart selector and the file format.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_path
from pretrain.sampling.refine import in_range, token_prob

FEATURES = ("entropy_mean", "entropy_max", "margin_mean", "margin_min", "token_prob_mean", "token_prob_min",
            "scale", "guidance")
FORMAT = "srdd-policy-v2"


def scale_features(probs_BlV: torch.Tensor, idx_Bl: torch.Tensor, k: int, K: int, t: float) -> torch.Tensor:
    """Per-sample features (B, 8) in FEATURES order of a scale drawn as ``idx_Bl`` from ``probs_BlV``."""
    V = probs_BlV.shape[-1]
    entropy_Bl = -(probs_BlV * probs_BlV.clamp_min(1e-12).log()).sum(-1) / math.log(V)
    top2_Bl2 = probs_BlV.topk(2, dim=-1).values
    margin_Bl = top2_Bl2[..., 0] - top2_Bl2[..., 1]
    drawn_Bl = token_prob(probs_BlV, idx_Bl)
    B = probs_BlV.shape[0]
    const = probs_BlV.new_tensor([k / max(1, K - 1), t]).expand(B, 2)
    return torch.cat([torch.stack([entropy_Bl.mean(1), entropy_Bl.amax(1), margin_Bl.mean(1), margin_Bl.amin(1),
                                   drawn_Bl.mean(1), drawn_Bl.amin(1)], 1), const], 1)


def step_features(step: Any) -> torch.Tensor:
    """``scale_features`` of a sampler ``ScaleStep`` (its final tokens, the distribution drawn from)."""
    return scale_features(step.probs(step.logits_BlV), step.idx_Bl, step.k, len(step.patch_nums), step.t)


class RefinePolicy(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.hidden = hidden
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, feats_NF: torch.Tensor) -> torch.Tensor:
        """Predicted penalised gain of a restart round, (N,)."""
        return self.net(feats_NF).squeeze(-1)


class PolicyRestart:
    """``sample.refine=policy``: a sampler ``restart`` that restarts the rows the policy predicts positive."""

    def __init__(self, policy: RefinePolicy, rounds: int, depth: int, scales: Optional[Sequence[int]] = None):
        self.policy, self.rounds, self.depth, self.scales = policy, rounds, depth, tuple(scales or ())

    @torch.no_grad()
    def select(self, step: Any) -> torch.Tensor:
        if not in_range(step.k, self.scales):
            return torch.zeros(len(step.label_B), dtype=torch.bool, device=step.label_B.device)
        return self.policy(step_features(step)) > 0


def save_policy(policy: RefinePolicy, path: str | Path, meta: dict[str, Any]) -> Path:
    """``meta`` must hold ``depth`` (the restart depth the gains were measured at)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "features": list(FEATURES), "hidden": policy.hidden,
                    "state_dict": policy.state_dict(), "meta": meta}, tmp)
    return Path(path)


def load_policy(path: str | Path) -> tuple[RefinePolicy, dict[str, Any]]:
    """(policy in eval mode, its meta) from a `srdd policy-train` file."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or list(blob.get("features", ())) != list(FEATURES):
        raise ConfigError(f"sample.policy_ckpt={path}: not a {FORMAT} file with features {list(FEATURES)} "
                          "(re-run `srdd policy-train`)")
    policy = RefinePolicy(blob["hidden"])
    policy.load_state_dict(blob["state_dict"])
    return policy.eval(), blob["meta"]
