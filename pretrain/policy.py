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
import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.config.train import TrainConfig
from pretrain.dist import DistInfo, init_distributed
from pretrain.outputs import atomic_path, atomic_write_json, save_config
from pretrain.pyramid.heads import CategoricalHead
from pretrain.sampling.refine import Refiner, RefineCost, select_below, token_prob
from pretrain.train.export import consolidated_state_dict
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window, WindowMeans
from pretrain.train.trainer import Trainer

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
class PolicyTask(TaskDefaults):
    """Regress the expected re-draw gain (MSE) with Adam on minibatches of tokens (engine ``model``),
    on the harness (pretrain/train/trainer.py); at the end, evaluate on the held-out quarter.

    The targets are collected again on a restart (the same forward passes, the same seeds): they
    are a deterministic function of the model and the held-out pyramids."""

    kind = "policy_train"

    def __init__(self, model: Any, vae: Any, batches: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
                 sample_cfg: Any, steps: int, out: Path, train: TrainConfig, info: DistInfo, seed: int = 0,
                 source: str = "", batch: int = 4096, lr: float = 3e-3, hidden: int = 32):
        cut = max(1, (3 * len(batches)) // 4)
        self.train_b, self.val_b = batches[:cut], batches[cut:]
        self.model, self.vae, self.sample_cfg, self.out, self.info = model, vae, sample_cfg, Path(out), info
        self.seed, self.source, self.batch, self.lr, self.hidden = seed, source, batch, lr, hidden
        self.outputs = (self.out / "policy.pt", self.out / "comparison.json")
        self.schedule = Schedule.from_train(train, steps, grad_accum=1, val_every=0)
        # its own recipe: Adam, no clipping, fp32, no ZeRO (a 1k-parameter MLP)
        self.engine_cfg = dataclasses.replace(train, grad_accum=1, grad_clip=0.0, zero_stage=0, precision="fp32")
        self.gen = torch.Generator().manual_seed(seed + info.rank)  # minibatch draws
        self.engines: dict[str, Any] = {}
        self.window = WindowMeans()

    def frozen(self) -> dict[str, Any]:
        return {"source": self.source, "held_out_batches": len(self.train_b) + len(self.val_b), "hidden": self.hidden,
                "batch": self.batch, "seed": self.seed, "world_size": self.info.world_size}

    def setup(self) -> None:
        from pretrain.engine import build_engine

        self.feats_NF, self.gain_N = collect_targets(self.model, self.vae, self.train_b, self.sample_cfg, self.seed)
        self.micro = max(1, min(self.batch, len(self.gain_N)) // self.info.world_size)
        torch.manual_seed(self.seed)  # identical init on every rank
        policy = ResamplePolicy(self.hidden)
        engine_cfg = dataclasses.replace(self.engine_cfg, batch_size=self.micro * self.info.world_size)
        self.engines = {"model": build_engine(policy, engine_cfg, self.schedule.total_steps, self.info.world_size,
                                              optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=self.lr))}

    def batches(self) -> Iterator[torch.Tensor]:
        while True:  # drawn lazily, so the generator state at a checkpoint is the position
            yield torch.randint(len(self.gain_N), (self.micro,), generator=self.gen)

    def loss(self, i_N: torch.Tensor) -> StepLoss:
        return StepLoss({"model": F.mse_loss(self.engines["model"](self.feats_NF[i_N]), self.gain_N[i_N])})

    def accumulate(self, out: StepLoss) -> None:
        self.window.add({"loss": out.objectives["model"].detach()})

    def record(self, window: Window) -> dict[str, Any]:
        return self.window.pop()

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "window": self.window.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.window.load_state_dict(state["window"])

    def finish(self, progress: Progress, log: Log) -> None:
        state_dict = consolidated_state_dict(self.engines["model"])
        if not self.info.is_main:
            return
        policy = ResamplePolicy(self.hidden)
        policy.load_state_dict(state_dict)
        report = evaluate_policy(policy.eval(), self.model, self.vae, self.val_b, self.sample_cfg, self.seed)
        report["train_tokens"] = len(self.gain_N)
        log({"kind": "policy", "step": progress.step, **{k: v for k, v in report.items() if k != "comparison"}})
        save_policy(policy, self.outputs[0], {"ckpt": self.source, "val_mse": report["val_mse"]})
        atomic_write_json(self.outputs[1], report)


def evaluate_policy(policy: ResamplePolicy, model: Any, vae: Any, val_b: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
                    sample_cfg: Any, seed: int = 0) -> dict[str, Any]:
    """Held-out regression error, selection quality and the refiner comparison (comparison.json)."""
    vfeats, vgains = collect_targets(model, vae, val_b, sample_cfg, seed + 1)
    with torch.no_grad():
        val_mse = float(F.mse_loss(policy(vfeats), vgains))
    rounds = max(1, sample_cfg.refine_rounds)
    return {"val_tokens": len(vgains), "val_mse": val_mse, "val_mse_zero": float(vgains.square().mean()),
            "selection": selection_quality(policy, vfeats, vgains, seed=seed), "rounds": rounds,
            "comparison": compare_refiners(model, vae, val_b, sample_cfg, policy, rounds, seed)}


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
                     steps: int, out: Path, train: TrainConfig, seed: int = 0, source: str = "",
                     wandb_config: dict[str, Any] | None = None) -> tuple[ResamplePolicy, dict[str, Any]]:
    """Train on the first 3/4 of ``batches`` (state, checkpoints and metrics in ``out``), evaluate
    selection and refinement on the rest; (policy, the comparison.json report). All ranks call it."""
    info = init_distributed()
    task = PolicyTask(model, vae, batches, sample_cfg, steps, out, train, info, seed, source)
    Trainer(task, task.out, info, config=wandb_config).run()
    return load_policy(task.outputs[0]), json.loads(task.outputs[1].read_text())


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.sampling.load import load_for_sampling

    model, vae, run, _ = load_for_sampling(args.ckpt)
    out = Path(args.out) if args.out else run / "policy"
    policy, report = run_policy_study(model, vae, heldout_batches(cfg, args.batches), cfg.sample, args.steps, out,
                                      cfg.train, cfg.seed, source=str(run / "model.pt"),
                                      wandb_config=OmegaConf.to_container(OmegaConf.structured(cfg)))
    if not init_distributed().is_main:
        return 0
    save_config(cfg, out)
    sel = report["selection"]
    print(f"selection on held-out targets (top {sel['frac']:.0%}): policy gain {sel['policy_gain']:.4f}  "
          f"random {sel['random_gain']:.4f}  oracle {sel['oracle_gain']:.4f}")
    print(format_table(report["comparison"], ["variant", "token_acc", "extra_passes", "extra_flops", "redrawn_frac"]))
    print(f"policy: {out / 'policy.pt'}")
    return 0
