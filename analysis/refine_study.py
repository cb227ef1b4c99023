"""`srdd refine-study --run RUN [--run RUN ...] --out DIR`: FD against sampling FLOPs for every refinement.

For each trained run (``model`` = its directory name) the study measures, with the ``sample.*``
settings of the command line (docs/sampling.md, "Refinement study"):

- ``none``: the plain one-pass sampler;
- ``onepass``: the best one-pass sampler of a grid (temperature, top-k, top-p, and the one-pass
  equivalent of the old Masked Resampling, ``sample.refine=onepass``), plus ``none`` itself, chosen by
  FD on a separate tuning seed with the same number of images, then measured like every other point;
- ``restart`` (``sample.refine=sr``) with R = each of ``--rounds`` on every scale, and R = 1 on each
  scale range of ``--restart-scales`` (fixed schedules of lower cost, the policy's comparison);
- ``selfcorrect`` (``sample.refine=mr``) with each R, for models trained with ``train.refine_objective``;
- ``policy`` (``sample.refine=policy``) when ``<run>/policy/policy.pt`` exists (`srdd policy-train`).

Every point: ``--images`` images (classes balanced) for each of ``--seeds`` (seed s samples with
``sample.seed = s * 10^6``, so no two seeds share a draw), features of the evaluation network
(``eval.*``), FD against the run's val split per seed; ``fd`` is the mean over seeds with its 95%
Student-t interval over seeds (analysis/intervals.py, the platform's convention): each seed is one
independent repetition of the whole measurement. Image i of a seed has the same label and draw seeds
under every method (the sampler seeds each scale's draws by (seed, scale, visit)), so methods are
compared seed by seed (paired). Resampling images instead (a bootstrap over each seed's images) is
not used: measured on the d2 SRDD run (docs/sampling.md), resamples with replacement of n = 300
images in the 128-d feature space raise FD by ~0.65 and spread it 5-9x wider than independent seeds
do, so its intervals say nothing about the real uncertainty. ``sampling_flops`` = forward FLOPs per
image of every scale pass the sampler ran (guided batch, refinement and restart prefixes included;
the tokenizer's decode and re-quantisation are not counted).

Verdict per model: a refinement *beats* the best one-pass sampler when the 95% interval of the
per-seed FD(best of none and onepass) - FD(refinement) lies above 0, is *worse* when it lies below,
and is *inconclusive* otherwise.

Outputs in ``--out``: ``refinement.csv`` (columns ``COLUMNS``), ``refinement.json`` (per-seed FDs,
the tuning table, the verdicts, the command), ``refinement.png`` (FD vs FLOPs with intervals), and a
feature cache ``refinement_cache/`` so a rerun measures only what is missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pretrain.config import SRDDConfig, load_config
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_path, atomic_write_json, atomic_write_text, save_config

log = logging.getLogger("srdd.refine_study")

COLUMNS = ("model", "method", "rounds", "sampling_flops", "fd", "fd_ci_low", "fd_ci_high", "n_images", "n_seeds",
           "setting", "fd_metric")
METHODS = ("none", "onepass", "restart", "selfcorrect", "policy")
SEED_STRIDE = 10 ** 6
# The one-pass grid: each entry a sample.* override set (plus none = the defaults).
ONEPASS_GRID = ("sample.temperature=0.8", "sample.temperature=0.9", "sample.top_k=64", "sample.top_p=0.9",
                "sample.refine=onepass,sample.p_resample=0.1,sample.refine_rounds=1",
                "sample.refine=onepass,sample.p_resample=0.3,sample.refine_rounds=2")


@dataclass
class Point:
    model: str
    method: str
    rounds: int
    setting: str  # the sample.* overrides, space-separated ("" = the command line's sampler)
    fd: float = float("nan")
    ci: tuple[float, float] = (float("nan"), float("nan"))
    flops: float = float("nan")
    per_seed: list[float] = field(default_factory=list)

    def row(self, n_images: int, n_seeds: int, metric: str) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "rounds": self.rounds, "sampling_flops": self.flops,
                "fd": self.fd, "fd_ci_low": self.ci[0], "fd_ci_high": self.ci[1], "n_images": n_images,
                "n_seeds": n_seeds, "setting": self.setting or "default", "fd_metric": metric}


class Measure:
    """Sample a setting of one run for one seed: (features, FLOPs per image), cached on disk."""

    def __init__(self, model: Any, vae: Any, name: str, configure: Any, n_images: int, net: Any, cache: Path):
        self.model, self.vae, self.configure, self.n, self.net = model, vae, configure, n_images, net
        self.cache = cache / name
        self.cache.mkdir(parents=True, exist_ok=True)
        self.settings: dict[str, Any] = {}  # setting -> its validated sample config (loading one takes ~1 s)

    def sample_config(self, setting: str, seed: int) -> Any:
        if setting not in self.settings:
            self.settings[setting] = self.configure(setting.split()).sample
        return dataclasses.replace(self.settings[setting], seed=seed * SEED_STRIDE)

    def __call__(self, setting: str, seed: int) -> tuple[np.ndarray, float]:
        from pretrain.sampling.batches import class_labels, sample_in_batches

        sample_cfg = self.sample_config(setting, seed)
        sampler = json.dumps(dataclasses.asdict(sample_cfg), sort_keys=True, default=list)
        key = hashlib.sha256(json.dumps([self.net.sha256, self.n, sampler]).encode()).hexdigest()[:16]
        path = self.cache / f"{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                return z["feats"], float(z["flops_per_image"])
        stats: dict[str, Any] = {}
        labels = class_labels([], self.n, self.model.num_classes)
        with torch.no_grad():
            images = [img for img, _ in sample_in_batches(self.model, self.vae, labels, sample_cfg, stats=stats)]
        feats, _ = self.net.extract(images)
        flops = stats["flops"] / self.n
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, feats=feats, flops_per_image=flops, sampler=sampler)
        return feats, flops


def measure_point(point: Point, measure: Measure, fd: Any, seeds: Sequence[int]) -> Point:
    from analysis.intervals import mean_ci

    feats, flops = zip(*(measure(point.setting, s) for s in seeds))
    point.per_seed = [fd(f) for f in feats]
    point.fd, *point.ci = mean_ci(point.per_seed)
    point.flops = float(np.mean(flops))
    return point


def setting_of(*overrides: str) -> str:
    return " ".join(overrides)


def tune_onepass(measure: Measure, fd: Any, tune_seed: int, grid: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """(the grid setting with the lowest FD on the tuning seed, the tuning table); "" = none's defaults."""
    table = []
    for setting in ("", *grid):
        feats, flops = measure(setting, tune_seed)
        table.append({"setting": setting or "default", "fd": fd(feats), "sampling_flops": flops})
    best = min(table, key=lambda r: r["fd"])
    return ("" if best["setting"] == "default" else best["setting"]), table


def verdicts(points: list[Point], model: str) -> list[dict[str, Any]]:
    """Each refinement against the better of none and the tuned one-pass sampler, seed by seed
    (module docstring); ``gain`` = FD(baseline) - FD(refinement), positive = the refinement is better."""
    from analysis.intervals import paired_ci, verdict

    mine = [p for p in points if p.model == model]
    baseline = min((p for p in mine if p.method in ("none", "onepass")), key=lambda p: p.fd)
    out = []
    for p in mine:
        if p.method in ("none", "onepass"):
            continue
        gain, lo, hi = paired_ci(baseline.per_seed, p.per_seed)
        out.append({"model": model, "method": p.method, "rounds": p.rounds, "setting": p.setting,
                    "baseline": f"{baseline.method} ({baseline.setting or 'default'})",
                    "fd_gain": gain, "ci_low": lo, "ci_high": hi, "flops_ratio": p.flops / baseline.flops,
                    "outcome": verdict(lo, hi, better="beats")})
    return out


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({p.model for p in points})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    markers = dict(zip(METHODS, "osD^v"))
    for ax, model in zip(axes[0], models):
        for method in METHODS:
            mine = sorted((p for p in points if p.model == model and p.method == method), key=lambda p: p.flops)
            if not mine:
                continue
            x = [p.flops / 1e9 for p in mine]
            y = [p.fd for p in mine]
            err = [[p.fd - p.ci[0] for p in mine], [p.ci[1] - p.fd for p in mine]]
            ax.errorbar(x, y, yerr=err, marker=markers[method], capsize=3, label=method, linestyle="-" if len(mine) > 1 else "none")
            for p in mine:
                if p.rounds:
                    ax.annotate(f"R={p.rounds}", (p.flops / 1e9, p.fd), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(model)
        ax.set_xlabel("sampling GFLOPs per image")
        ax.set_ylabel("FD (lower is better)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    atomic_write_text(path, pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index=False))


def rounds_of(setting: str) -> int:
    """R of a setting's refinement (0 for plain truncation)."""
    values = dict(o.split("=", 1) for o in setting.split())
    return int(values.get("sample.refine_rounds", 0)) if "sample.refine" in values else 0


def study_points(model: Any, name: str, rounds: Sequence[int], onepass: str, policy: Path,
                 restart_scales: Sequence[tuple[int, int]] = ()) -> list[Point]:
    points = [Point(name, "none", 0, ""), Point(name, "onepass", rounds_of(onepass), onepass)]
    points += [Point(name, "restart", r, setting_of("sample.refine=sr", f"sample.refine_rounds={r}")) for r in rounds]
    points += [Point(name, "restart", 1, setting_of("sample.refine=sr", "sample.refine_rounds=1",
                                                    f"sample.refine_scales=[{a},{b}]")) for a, b in restart_scales]
    if getattr(model, "refine_inputs", False):
        points += [Point(name, "selfcorrect", r, setting_of("sample.refine=mr", f"sample.refine_rounds={r}")) for r in rounds]
    if policy.is_file():
        points.append(Point(name, "policy", 1, setting_of("sample.refine=policy", f"sample.policy_ckpt={policy}",
                                                          "sample.refine_rounds=1")))
    return points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", action="append", required=True, metavar="RUN", help="trained run (repeatable)")
    parser.add_argument("--out", required=True, help="study directory: refinement.csv/.json/.png are written here")
    parser.add_argument("--images", type=int, default=500, help="images per point and seed")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds (>= 3 for the report's intervals)")
    parser.add_argument("--tune-seed", type=int, default=99, help="seed of the one-pass tuning (not among --seeds)")
    parser.add_argument("--rounds", default="1,2,4", help="R of restart and self-correction")
    parser.add_argument("--restart-scales", default="", help="extra R = 1 restart points on scale ranges, e.g. 5-5,4-5")
    parser.add_argument("--onepass-grid", default=";".join(ONEPASS_GRID),
                        help="';'-separated one-pass settings (each a ','-separated sample.* override set); empty = none only")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from analysis.evaluate import val_reference
    from analysis.metrics.frechet import FrechetToReference
    from analysis.metrics.networks import load_feature_net
    from pretrain.sampling.load import load_for_sampling

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rounds = [int(r) for r in args.rounds.split(",") if r.strip()]
    grid = [setting_of(*(o for o in g.split(",") if o.strip())) for g in args.onepass_grid.split(";") if g.strip()]
    try:
        ranges = [tuple(int(v) for v in r.split("-")) for r in args.restart_scales.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--restart-scales {args.restart_scales!r}: expected first-last ranges, e.g. 5-5,4-5") from None
    if args.tune_seed in seeds:
        raise ConfigError(f"--tune-seed {args.tune_seed} is one of --seeds {seeds}: tune on draws you do not report")
    if len(seeds) < 2 or args.images < 2 or any(r < 1 for r in rounds):
        raise ConfigError(f"--seeds {args.seeds} / --images {args.images} / --rounds {args.rounds}: need >= 2 seeds "
                          "(an interval; the study asks for >= 3), >= 2 images and rounds >= 1")
    overrides = list(getattr(args, "overrides", []))
    configure = lambda extra: load_config(getattr(args, "config", None), [*overrides, *extra])  # noqa: E731
    out = Path(args.out)
    points: list[Point] = []
    tuning: dict[str, Any] = {}
    metric = ""
    for spec in args.run:
        model, vae, run, run_cfg = load_for_sampling(spec)
        net = load_feature_net(cfg.eval, run_cfg.data.source)  # the net and reference follow the run's dataset
        metric = net.metric("FD")
        fd = FrechetToReference(val_reference(run_cfg, net, cfg.eval.batch_size).stats)
        measure = Measure(model, vae, run.name, configure, args.images, net, out / "refinement_cache")
        best, tuning[run.name] = tune_onepass(measure, fd, args.tune_seed, grid)
        for point in study_points(model, run.name, rounds, best, run / "policy" / "policy.pt", ranges):
            points.append(measure_point(point, measure, fd, seeds))
            log.info("%s %s R=%d: FD %.3f [%.3f, %.3f] at %.3g FLOPs/image", point.model, point.method, point.rounds,
                     point.fd, *point.ci, point.flops)
    rows = [p.row(args.images, len(seeds), metric) for p in points]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "refinement.csv")
    command = ["srdd refine-study", *(f"--run {r}" for r in args.run), f"--out {args.out}", f"--images {args.images}",
               f"--seeds {args.seeds}", f"--tune-seed {args.tune_seed}", f"--rounds {args.rounds}",
               *([f"--restart-scales {args.restart_scales}"] if args.restart_scales else []),
               f"--onepass-grid '{args.onepass_grid}'", *overrides]
    summary = {"command": " ".join(command),
               "seeds": seeds, "tune_seed": args.tune_seed, "n_images": args.images,
               "fd_metric": metric, "tuning": tuning,
               "points": [{**r, "fd_per_seed": p.per_seed} for r, p in zip(rows, points)],
               "verdicts": [v for name in dict.fromkeys(p.model for p in points) for v in verdicts(points, name)]}
    atomic_write_json(out / "refinement.json", summary)
    plot(points, out / "refinement.png")
    save_config(cfg, out / "refinement_cache")
    for v in summary["verdicts"]:
        print(f"{v['model']} {v['method']} R={v['rounds']} ({v['setting']}): FD({v['baseline']}) - FD = "
              f"{v['fd_gain']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] at {v['flops_ratio']:.2f}x FLOPs: {v['outcome']}")
    print(f"wrote {out / 'refinement.csv'}")
    return 0
