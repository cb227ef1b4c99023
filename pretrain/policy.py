"""Learned resampling policy (`srdd policy-train`): which tokens deserve another draw.

SRDD names a learned refinement policy as future work; this is the platform's version. A
small MLP reads per-token uncertainty of the distribution a token was drawn from - entropy
(over log V), max probability, margin (top-1 minus top-2), the drawn token's probability -
and the scale index k/(K-1), and predicts the expected gain in correctness of re-drawing it.

Targets come from held-out pyramids, teacher-forced at the true state (the ground-truth
prefix of scales < k): with p the sampling distribution, a drawn token x and the true code
g, a re-draw x' ~ p is correct with probability p[g], so the expected gain of re-drawing is

    gain = p[g] - 1[x == g]        (in [-1, 1]; > 0 means the re-draw moves toward the truth)

which is the exact expectation over x' (lower variance than a single re-draw). At sampling
time the policy re-draws tokens with predicted gain > 0 (``Refiner`` in refine.py), R rounds.

Evaluation, on the held-out split the policy never trained on: (1) selection quality - the
mean realised gain of the policy's chosen tokens vs a random choice of the same size;
(2) at equal extra passes (same R, same scales), token accuracy against the held-out
pyramids for no refinement, fixed-threshold MR and the policy, with the cost of each.
"""
from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import append_jsonl, atomic_path, atomic_write_json, save_config
from pretrain.pyramid.heads import CategoricalHead
from pretrain.sampling.refine import Refiner, RefineCost, select_below, token_prob

log = logging.getLogger("srdd.policy")
FEATURES = ("entropy", "max_prob", "margin", "token_prob", "scale")
FORMAT = "srdd-policy-v1"


# ---- features and targets ---------------------------------------------------------------------
def uncertainty_features(probs_BlV: torch.Tensor, idx_Bl: torch.Tensor, k: int, K: int) -> torch.Tensor:
    """Per-token features (B, l, 5) in FEATURES order, all in [0, 1]."""
    V = probs_BlV.shape[-1]
    entropy = -(probs_BlV * probs_BlV.clamp_min(1e-12).log()).sum(-1) / math.log(V)
    top2 = probs_BlV.topk(2, dim=-1).values
    scale = torch.full_like(entropy, k / max(1, K - 1))
    return torch.stack([entropy, top2[..., 0], top2[..., 0] - top2[..., 1], token_prob(probs_BlV, idx_Bl), scale], -1)


def redraw_gain(probs_BlV: torch.Tensor, idx_Bl: torch.Tensor, gt_Bl: torch.Tensor) -> torch.Tensor:
    """Expected change in correctness from re-drawing each token: p[g] - 1[x == g]."""
    return token_prob(probs_BlV, gt_Bl) - (idx_Bl == gt_Bl).float()


# ---- the network ---------------------------------------------------------------------------
class ResamplePolicy(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.hidden = hidden
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, feats_NF: torch.Tensor) -> torch.Tensor:
        """Predicted gain of re-drawing each token, (N,) or (B, l)."""
        return self.net(feats_NF).squeeze(-1)

    def selector(self, threshold: float = 0.0) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
        """A ``Refiner`` selector: re-draw tokens whose predicted gain exceeds ``threshold``."""
        @torch.no_grad()
        def select(step: Any, logits_BlV: torch.Tensor, idx_Bl: torch.Tensor) -> torch.Tensor:
            feats = uncertainty_features(step.probs(logits_BlV), idx_Bl, step.k, len(step.patch_nums))
            return self(feats) > threshold
        return select


def save_policy(policy: ResamplePolicy, path: str | Path, meta: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "features": list(FEATURES), "hidden": policy.hidden,
                    "state_dict": policy.state_dict(), "meta": meta}, tmp)
    return Path(path)


def load_policy(path: str | Path) -> ResamplePolicy:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or list(blob.get("features", ())) != list(FEATURES):
        raise ConfigError(f"sample.policy_ckpt={path}: not a {FORMAT} file with features {list(FEATURES)}")
    policy = ResamplePolicy(blob["hidden"])
    policy.load_state_dict(blob["state_dict"])
    return policy.eval()


# ---- teacher-forced states ----------------------------------------------------------------
@dataclass
class TeacherForcedStep:
    """A sampler ``ScaleStep`` at the true state: the refine hooks run on it unchanged.

    ``forward`` returns the teacher-forced logits of the scale (re-running the pass at the same
    state gives the same logits in eval mode); each call is counted by the Refiner as a pass."""

    k: int
    pn: int
    patch_nums: tuple[int, ...]
    label_B: torch.Tensor
    logits_BlV: torch.Tensor
    idx_Bl: torch.Tensor
    guided_batch: int
    probs: Callable[[torch.Tensor], torch.Tensor]
    draw: Callable[[torch.Tensor], torch.Tensor]

    def forward(self) -> torch.Tensor:
        return self.logits_BlV


def teacher_forced_steps(model: Any, vae: Any, label_B: torch.Tensor, idx_list: Sequence[torch.Tensor],
                         sample_cfg: Any, generator: torch.Generator) -> Iterator[tuple[TeacherForcedStep, torch.Tensor]]:
    """(step with a fresh draw, ground-truth tokens) for every scale of a held-out batch."""
    from pretrain.sampling.sampler import guidance_weights

    head = CategoricalHead(model.V)  # the policy re-draws VQ codes: VAR's head, as the sampler uses it
    pns = tuple(model.patch_nums)
    x_BLCv = vae.pyramid_to_var_input(idx_list, pns)
    ts = guidance_weights(sample_cfg.cfg, len(pns), sample_cfg.cfg_schedule)
    cond_BLV = model(label_B, x_BLCv)
    guided = any(t != 0 for t in ts)
    uncond_BLV = model(torch.full_like(label_B, model.num_classes), x_BLCv) if guided else cond_BLV
    guided_batch = (2 if guided else 1) * len(label_B)
    probs = lambda lg: head.probs(lg, sample_cfg.top_k, sample_cfg.top_p, sample_cfg.temperature)  # noqa: E731
    draw = lambda lg: head.draw(lg, generator, sample_cfg.top_k, sample_cfg.top_p, sample_cfg.temperature)  # noqa: E731
    for k, (pn, t, (b, e)) in enumerate(zip(pns, ts, model.begin_ends)):
        logits = head.guide(cond_BLV[:, b:e], uncond_BLV[:, b:e], t)  # VAR's guidance at scale k
        step = TeacherForcedStep(k, pn, pns, label_B, logits, draw(logits), guided_batch, probs, draw)
        yield step, idx_list[k]


def collect_targets(model: Any, vae: Any, batches: Iterable[tuple[torch.Tensor, list[torch.Tensor]]],
                    sample_cfg: Any, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 5) and expected re-draw gains (N,) over every token of ``batches``."""
    g = torch.Generator().manual_seed(seed)
    feats, gains = [], []
    with torch.no_grad():
        for label_B, idx_list in batches:
            for step, gt in teacher_forced_steps(model, vae, label_B, idx_list, sample_cfg, g):
                p = step.probs(step.logits_BlV)
                feats.append(uncertainty_features(p, step.idx_Bl, step.k, len(step.patch_nums)).flatten(0, 1))
                gains.append(redraw_gain(p, step.idx_Bl, gt).flatten())
    return torch.cat(feats), torch.cat(gains)


# ---- training and evaluation ----------------------------------------------------------------
def train_policy(feats_NF: torch.Tensor, gain_N: torch.Tensor, steps: int = 300, batch: int = 4096,
                 lr: float = 3e-3, hidden: int = 32, seed: int = 0) -> ResamplePolicy:
    """Regress the expected re-draw gain (MSE) with Adam on minibatches of tokens."""
    torch.manual_seed(seed)
    policy = ResamplePolicy(hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(gain_N), (min(batch, len(gain_N)),), generator=g)
        loss = F.mse_loss(policy(feats_NF[i]), gain_N[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


def selection_quality(policy: ResamplePolicy, feats_NF: torch.Tensor, gain_N: torch.Tensor, frac: float = 0.1,
                      seed: int = 0) -> dict[str, float]:
    """Mean realised gain of the policy's top ``frac`` tokens vs ``frac`` chosen at random (and vs all)."""
    m = max(1, int(frac * len(gain_N)))
    with torch.no_grad():
        top = policy(feats_NF).topk(m).indices
    rand = torch.randperm(len(gain_N), generator=torch.Generator().manual_seed(seed))[:m]
    return {"frac": frac, "tokens": m, "policy_gain": float(gain_N[top].mean()),
            "random_gain": float(gain_N[rand].mean()), "oracle_gain": float(gain_N.topk(m).values.mean())}


def compare_refiners(model: Any, vae: Any, batches: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
                     sample_cfg: Any, policy: ResamplePolicy, rounds: int, seed: int = 0) -> list[dict[str, Any]]:
    """Token accuracy vs held-out pyramids and extra cost: none, fixed-threshold MR, policy (same R and scales)."""
    scales = sample_cfg.refine_scales or None
    variants: dict[str, Refiner | None] = {
        "none": None,
        f"mr(p<{sample_cfg.p_resample:g})": Refiner(select_below(sample_cfg.p_resample), rounds, scales, model),
        "policy": Refiner(policy.selector(), rounds, scales, model),
    }
    rows = []
    for name, refiner in variants.items():
        g = torch.Generator().manual_seed(seed)  # the same first draws for every variant
        correct = total = 0
        with torch.no_grad():
            for label_B, idx_list in batches:
                for step, gt in teacher_forced_steps(model, vae, label_B, idx_list, sample_cfg, g):
                    idx = step.idx_Bl if refiner is None else refiner(step)
                    correct += int((idx == gt).sum())
                    total += gt.numel()
        cost = refiner.cost if refiner is not None else RefineCost()
        rows.append({"variant": name, "token_acc": correct / max(1, total), "tokens": total,
                     "extra_passes": cost.passes, "extra_flops": cost.flops,
                     "redrawn_frac": cost.redrawn_tokens / max(1, total)})
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    table = [list(columns)] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in table)


# ---- the stage ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="RUN", help="trained run (directory or name) holding model.pt")
    parser.add_argument("--batches", type=int, default=16, help="held-out pyramid batches (3/4 train the policy, 1/4 evaluate)")
    parser.add_argument("--steps", type=int, default=300, help="policy optimiser steps")
    parser.add_argument("--out", default=None, help="output directory (default <run>/policy)")


def heldout_batches(cfg: SRDDConfig, n: int) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """The first n batches of the validation pyramid shards (data the transformer never trained on)."""
    from data_pipeline.pyramid_shards.loader import PyramidLoader

    out = []
    for label_B, idx_list in PyramidLoader(cfg, split="val", batch_size=cfg.sample.batch_size, infinite=False):
        out.append((label_B, idx_list))
        if len(out) == n:
            break
    if len(out) < 2:
        raise ConfigError(f"policy-train needs >= 2 validation pyramid batches of sample.batch_size={cfg.sample.batch_size}; found {len(out)}")
    return out


def run_policy_study(model: Any, vae: Any, batches: Sequence[tuple[torch.Tensor, list[torch.Tensor]]], sample_cfg: Any,
                     steps: int, seed: int = 0) -> tuple[ResamplePolicy, dict[str, Any]]:
    """Train on the first 3/4 of ``batches``, evaluate selection and refinement on the rest."""
    cut = max(1, (3 * len(batches)) // 4)
    train_b, val_b = batches[:cut], batches[cut:]
    feats, gains = collect_targets(model, vae, train_b, sample_cfg, seed)
    policy = train_policy(feats, gains, steps=steps, seed=seed)
    vfeats, vgains = collect_targets(model, vae, val_b, sample_cfg, seed + 1)
    with torch.no_grad():
        val_mse = float(F.mse_loss(policy(vfeats), vgains))
    rounds = max(1, sample_cfg.refine_rounds)
    report = {"train_tokens": len(gains), "val_tokens": len(vgains), "val_mse": val_mse,
              "val_mse_zero": float(vgains.square().mean()), "selection": selection_quality(policy, vfeats, vgains, seed=seed),
              "rounds": rounds, "comparison": compare_refiners(model, vae, val_b, sample_cfg, policy, rounds, seed)}
    return policy, report


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.sampling.load import load_for_sampling

    model, vae, run, _ = load_for_sampling(args.ckpt)
    out = Path(args.out) if args.out else run / "policy"
    policy, report = run_policy_study(model, vae, heldout_batches(cfg, args.batches), cfg.sample, args.steps, cfg.seed)
    save_policy(policy, out / "policy.pt", {"ckpt": str(run / "model.pt"), "val_mse": report["val_mse"]})
    atomic_write_json(out / "comparison.json", report)
    append_jsonl(out / "metrics.jsonl", {"kind": "policy", **{k: v for k, v in report.items() if k != "comparison"}})
    save_config(cfg, out)
    sel = report["selection"]
    print(f"selection on held-out targets (top {sel['frac']:.0%}): policy gain {sel['policy_gain']:.4f}  "
          f"random {sel['random_gain']:.4f}  oracle {sel['oracle_gain']:.4f}")
    print(format_table(report["comparison"], ["variant", "token_acc", "extra_passes", "extra_flops", "redrawn_frac"]))
    print(f"policy: {out / 'policy.pt'}")
    return 0
