"""`srdd policy-train --ckpt RUN`: train the learned restart policy on measured per-sample quality gains.

The policy (pretrain/policy.py) decides, per sample and scale, whether a restart round is worth its
FLOPs. Its targets are measured on sampled trajectories, not on ground truth (docs/sampling.md,
"Learned policy"):

- ``--trajectories`` N samples with the ``sample.*`` settings (classes cycling, batch i seeded
  ``sample.seed + i``): the base sample, and for every scale k the same trajectory with one restart
  round at k (depth ``sample.refine_depth``). The sampler seeds each draw by (seed, scale, visit),
  so base and branch are identical up to scale k and share the random numbers after it: the
  difference is the round's effect, not a different draw.
- score = log-probability of the conditioning class under the evaluation classifier (``eval.*``,
  the platform's ``mnist-cnn``): a per-sample quality the FD network agrees with;
- target(n, k) = score(branch) - score(base) - lambda * (the round's FLOPs / a one-pass sample's
  FLOPs), lambda = ``--flops-penalty``; features = ``scale_features`` of the base draw of scale k.

Training: MSE regression with Adam on the harness (pretrain/train/trainer.py; resumable) over the
first 3/4 of the trajectories; the rest are held out for comparison.json. Outputs in ``--out``
(default ``<run>/policy``): gains.npz (features, targets, raw gains, relative costs; reused by a
rerun with the same settings), policy.pt, comparison.json, metrics.jsonl, checkpoints/, config.yaml.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.train import TrainConfig
from pretrain.dist import DistInfo, init_distributed
from pretrain.outputs import atomic_path, atomic_write_json, save_config
from pretrain.policy import RefinePolicy, load_policy, save_policy, step_features
from pretrain.train.export import consolidated_state_dict
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window, WindowMeans
from pretrain.train.trainer import Trainer

log = logging.getLogger("srdd.policy")


class BranchAt:
    """A sampler ``restart`` that records every scale's features and restarts all rows at scale ``k`` only."""

    rounds = 1

    def __init__(self, depth: int, k: int | None):
        self.depth, self.k = depth, k
        self.feats: dict[int, torch.Tensor] = {}

    def select(self, step: Any) -> torch.Tensor:
        self.feats[step.k] = step_features(step)
        return torch.full((len(step.label_B),), step.k == self.k, dtype=torch.bool, device=step.label_B.device)


@torch.no_grad()
def class_log_likelihood(net: Any, img_B3HW: torch.Tensor, label_B: torch.Tensor) -> torch.Tensor:
    """log p(label | image) under the evaluation classifier, (B,)."""
    _, probs_BC = net.module.features(img_B3HW.float())
    return probs_BC.gather(1, label_B.view(-1, 1)).squeeze(1).clamp_min(1e-12).log()


@torch.no_grad()
def measure_gains(model: Any, vae: Any, net: Any, labels_N: torch.Tensor, sample_cfg: Any,
                  flops_penalty: float) -> dict[str, np.ndarray]:
    """Per (trajectory, scale): features, raw score gain, relative FLOPs of the round, penalised target."""
    from pretrain.sampling.sampler import sample

    s = sample_cfg
    kwargs = dict(cfg=s.cfg, top_k=s.top_k, top_p=s.top_p, schedule=list(s.schedule) or None,
                  temperature=s.temperature, cfg_schedule=s.cfg_schedule)
    feats, gains, costs, ks, traj = [], [], [], [], []
    for i in range(0, len(labels_N), s.batch_size):
        label_B = labels_N[i:i + s.batch_size]
        base, base_stats = BranchAt(s.refine_depth, None), {}
        img = sample(model, vae, label_B, seed=s.seed + i, restart=base, stats=base_stats, **kwargs)
        score_B = class_log_likelihood(net, img, label_B)
        for k, feats_BF in sorted(base.feats.items()):
            stats: dict[str, Any] = {}
            img_k = sample(model, vae, label_B, seed=s.seed + i, restart=BranchAt(s.refine_depth, k), stats=stats, **kwargs)
            relcost = (stats["flops"] - base_stats["flops"]) / base_stats["flops"]
            feats.append(feats_BF.numpy())
            gains.append((class_log_likelihood(net, img_k, label_B) - score_B).numpy())
            costs.append(np.full(len(label_B), relcost))
            ks.append(np.full(len(label_B), k))
            traj.append(np.arange(i, i + len(label_B)))
    gain_N, cost_N = np.concatenate(gains), np.concatenate(costs)
    return {"features": np.concatenate(feats).astype(np.float32), "gain": gain_N, "relative_flops": cost_N,
            "target": (gain_N - flops_penalty * cost_N).astype(np.float32), "scale": np.concatenate(ks),
            "trajectory": np.concatenate(traj)}


def split_by_trajectory(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, held-out) masks: the first 3/4 of the trajectories train."""
    n = int(data["trajectory"].max()) + 1
    train = data["trajectory"] < max(1, (3 * n) // 4)
    return train, ~train


class PolicyTask(TaskDefaults):
    """Regress the penalised gain (MSE) with Adam on minibatches (engine ``model``) on the harness;
    at the end, evaluate on the held-out trajectories (comparison.json)."""

    kind = "policy_train"

    def __init__(self, data: dict[str, np.ndarray], steps: int, out: Path, train: TrainConfig, info: DistInfo,
                 meta: dict[str, Any], seed: int = 0, batch: int = 1024, lr: float = 3e-3, hidden: int = 32):
        self.data, self.out, self.info, self.meta = data, Path(out), info, meta
        self.seed, self.batch, self.lr, self.hidden = seed, batch, lr, hidden
        self.train_mask, self.val_mask = split_by_trajectory(data)
        self.feats_NF = torch.from_numpy(data["features"][self.train_mask])
        self.target_N = torch.from_numpy(data["target"][self.train_mask])
        self.outputs = (self.out / "policy.pt", self.out / "comparison.json")
        self.schedule = Schedule.from_train(train, steps, grad_accum=1, val_every=0)
        # its own recipe: Adam, no clipping, fp32, no ZeRO (a 1k-parameter MLP)
        self.engine_cfg = dataclasses.replace(train, grad_accum=1, grad_clip=0.0, zero_stage=0, precision="fp32")
        self.gen = torch.Generator().manual_seed(seed + info.rank)  # minibatch draws
        self.engines: dict[str, Any] = {}
        self.window = WindowMeans()

    def frozen(self) -> dict[str, Any]:
        return {**self.meta, "hidden": self.hidden, "batch": self.batch, "seed": self.seed,
                "world_size": self.info.world_size}

    def setup(self) -> None:
        from pretrain.engine import build_engine

        self.micro = max(1, min(self.batch, len(self.target_N)) // self.info.world_size)
        torch.manual_seed(self.seed)  # identical init on every rank
        engine_cfg = dataclasses.replace(self.engine_cfg, batch_size=self.micro * self.info.world_size)
        self.engines = {"model": build_engine(RefinePolicy(self.hidden), engine_cfg, self.schedule.total_steps,
                                              self.info.world_size,
                                              optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=self.lr))}

    def batches(self) -> Iterator[torch.Tensor]:
        while True:  # drawn lazily, so the generator state at a checkpoint is the position
            yield torch.randint(len(self.target_N), (self.micro,), generator=self.gen)

    def loss(self, i_N: torch.Tensor) -> StepLoss:
        return StepLoss({"model": F.mse_loss(self.engines["model"](self.feats_NF[i_N]), self.target_N[i_N])})

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
        policy = RefinePolicy(self.hidden)
        policy.load_state_dict(state_dict)
        report = evaluate_policy(policy.eval(), self.data, self.val_mask, self.train_mask)
        log({"kind": "policy", "step": progress.step, **{k: v for k, v in report.items() if k != "per_scale"}})
        save_policy(policy, self.outputs[0], {**self.meta, "val_mse": report["val_mse"]})
        atomic_write_json(self.outputs[1], report)


def evaluate_policy(policy: RefinePolicy, data: dict[str, np.ndarray], val: np.ndarray, train: np.ndarray) -> dict[str, Any]:
    """Held-out regression error, and the penalised gain the policy's choices realise against
    never refining (0), always refining, the best fixed scale, a random choice of the same size and
    the oracle (every pair with a positive target)."""
    with torch.no_grad():
        pred = policy(torch.from_numpy(data["features"][val])).numpy()
    target, gain, cost, scale = (data[k][val] for k in ("target", "gain", "relative_flops", "scale"))
    chosen = pred > 0
    rng = np.random.default_rng(0)
    random = np.zeros_like(chosen)
    random[rng.permutation(len(chosen))[:int(chosen.sum())]] = True
    n_traj = len(np.unique(data["trajectory"][val]))
    per_traj = lambda mask: float(target[mask].sum() / n_traj)  # noqa: E731  penalised gain per sample
    scales = sorted(set(scale.tolist()))
    fixed = {int(k): per_traj(scale == k) for k in scales}
    return {"val_pairs": int(len(target)), "train_pairs": int(train.sum()),
            "val_mse": float(np.mean((pred - target) ** 2)),
            "val_mse_mean": float(np.mean((data["target"][train].mean() - target) ** 2)),
            "chosen_frac": float(chosen.mean()),
            "penalised_gain_per_sample": {"policy": per_traj(chosen), "never": 0.0, "always": per_traj(np.ones_like(chosen)),
                                          "random_same_count": per_traj(random), "best_fixed_scale": max(fixed.values()),
                                          "oracle": per_traj(target > 0)},
            "relative_flops_per_sample": {"policy": float(cost[chosen].sum() / n_traj),
                                          "always": float(cost.sum() / n_traj)},
            "per_scale": [{"scale": int(k), "mean_gain": float(gain[scale == k].mean()),
                           "mean_target": float(target[scale == k].mean()),
                           "relative_flops": float(cost[scale == k].mean()),
                           "chosen_frac": float(chosen[scale == k].mean())} for k in scales]}


def collect_or_load(path: Path, meta: dict[str, Any], collect: Any, write: bool = True) -> dict[str, np.ndarray]:
    """gains.npz when it was measured with ``meta``; else measure (``collect()``, deterministic: every
    rank gets the same) and write it (``write``: the main rank)."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) == meta:
                return {k: z[k] for k in z.files if k != "meta"}
    data = collect()
    if not write:
        return data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=json.dumps(meta), **data)
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="RUN", help="trained run (directory or name) holding model.pt")
    parser.add_argument("--trajectories", type=int, default=256, help="sampled trajectories (3/4 train, 1/4 evaluate)")
    parser.add_argument("--steps", type=int, default=300, help="policy optimiser steps")
    parser.add_argument("--flops-penalty", type=float, default=0.1,
                        help="lambda: nats of class log-likelihood a round must gain per one-pass sample of FLOPs")
    parser.add_argument("--out", default=None, help="output directory (default <run>/policy)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from analysis.metrics.networks import load_feature_net
    from pretrain.sampling.batches import class_labels
    from pretrain.sampling.load import load_for_sampling

    model, vae, run, run_cfg = load_for_sampling(args.ckpt)
    net = load_feature_net(cfg.eval, run_cfg.data.source)
    out = Path(args.out) if args.out else run / "policy"
    s = cfg.sample
    meta = {"ckpt": str(run / "model.pt"), "feature_net": net.sha256, "trajectories": args.trajectories,
            "flops_penalty": args.flops_penalty, "depth": s.refine_depth, "seed": s.seed, "batch_size": s.batch_size,
            "sampler": {k: getattr(s, k) for k in ("cfg", "cfg_schedule", "top_k", "top_p", "temperature")},
            "schedule": list(s.schedule), "score": "class_log_likelihood"}
    labels = class_labels([], args.trajectories, model.num_classes)
    info = init_distributed()
    out.mkdir(parents=True, exist_ok=True)
    data = collect_or_load(out / "gains.npz", meta, lambda: measure_gains(model, vae, net, labels, s, args.flops_penalty),
                           write=info.is_main)
    task = PolicyTask(data, args.steps, out, cfg.train, info, meta, cfg.seed)
    Trainer(task, task.out, info, config=OmegaConf.to_container(OmegaConf.structured(cfg))).run()
    if not info.is_main:
        return 0
    save_config(cfg, out)
    load_policy(task.outputs[0])  # the file round-trips
    report = json.loads(task.outputs[1].read_text())
    g = report["penalised_gain_per_sample"]
    print(f"held-out penalised gain per sample (lambda={args.flops_penalty:g}): policy {g['policy']:.4f}  "
          f"always {g['always']:.4f}  best fixed scale {g['best_fixed_scale']:.4f}  random {g['random_same_count']:.4f}  "
          f"oracle {g['oracle']:.4f}; policy restarts {report['chosen_frac']:.1%} of (sample, scale) pairs")
    print(f"policy: {out / 'policy.pt'}")
    return 0
