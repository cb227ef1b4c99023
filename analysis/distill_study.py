"""`srdd distill-study --teacher T --distilled D --data-only C`: is the distilled student as good as its
teacher at fewer scales, and better than the data-only control? (docs/sampling.md, "Scale distillation").

Four models sample ``--n`` class-balanced images per seed, ``--seeds`` seeds each:

- ``teacher``: the full-schedule run, with this command's ``sample.*`` (the teacher's configuration);
- ``distilled``: the `srdd distill` student on its schedule, with the plain sampler saved in its
  config (guidance and truncation are in its targets: pretrain/distill/task.py);
- ``data_only``: the `srdd distill --data-only` control on the same schedule, sampled like the teacher;
- ``reindexed``: the teacher's weights re-indexed to the student schedule with no training
  (``pretrain.distill.schedule_model``), sampled like the teacher.

Per seed: FD of the images against the val split with the eval feature network (``eval.*``;
FD-<net>), the sampler's forward FLOPs per image (CFG rows included) and the transformer loop's
seconds per ``sample()`` call of ``sample.batch_size`` images. Outputs in ``--out`` (default the
distilled run's parent, the study directory):

- ``distill.csv``: one row per model: ``model, scales, sampling_flops, latency_s, fd, fd_ci_low,
  fd_ci_high, n_seeds`` (mean over seeds, 95% t interval: analysis/intervals.py), then
  ``patch_nums``, ``train_flops`` (all training compute behind the model: the teacher's run; the
  distilled student's ledger = teacher training + teacher samples + its steps + the KL's teacher
  passes; the control's steps; the re-indexed copy the teacher's), ``fd_metric`` and ``run``;
- ``distill_seeds.csv``: the per-seed values;
- ``distill_goal.json``: the goal, claim by claim (``distill_goal``).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from analysis.intervals import mean_ci, paired_ci, verdict
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_write_json, atomic_write_text

log = logging.getLogger("srdd.distill_study")
MODELS = ("teacher", "distilled", "data_only", "reindexed")
COLUMNS = ["model", "scales", "sampling_flops", "latency_s", "fd", "fd_ci_low", "fd_ci_high", "n_seeds",
           "patch_nums", "train_flops", "fd_metric", "run"]
FD_TOLERANCE = 0.05  # the goal: within 5% of the teacher's FD
FLOPS_RATIO_GOAL = 0.75  # at <= 0.75x the teacher's sampling FLOPs


@dataclass
class Contender:
    name: str
    model: Any
    sample_cfg: Any
    run: str
    train_flops: float | None


def seed_value(base: int, s: int) -> int:
    """Sampling seed of repetition s: far enough apart that no two repetitions share a chunk seed."""
    return base + 100_003 * s


def contenders(cfg: SRDDConfig, teacher: str, distilled: str, data_only: str) -> tuple[list[Contender], Any]:
    """The four models and the tokenizer they share."""
    from pretrain.distill.schedule import schedule_model
    from pretrain.distill.task import PLAIN_SAMPLER, read_flops
    from pretrain.sampling.load import load_for_sampling

    t_model, vae, t_run, _ = load_for_sampling(teacher)
    d_model, _, d_run, d_cfg = load_for_sampling(distilled)
    c_model, _, c_run, _ = load_for_sampling(data_only)
    if d_model.patch_nums != c_model.patch_nums:
        raise ConfigError(f"--distilled {d_run} samples on {list(d_model.patch_nums)} but --data-only {c_run} on "
                          f"{list(c_model.patch_nums)}: the control must share the student's schedule")
    final = t_run / "final.json"
    t_flops = json.loads(final.read_text())["flops"] if final.is_file() else None
    plain = copy.deepcopy(cfg.sample)
    for key in PLAIN_SAMPLER:  # what the distilled run saved (its targets carry the teacher's sampler)
        setattr(plain, key, getattr(d_cfg.sample, key))
    reindexed = schedule_model(t_model, d_model.patch_nums).eval()
    return [Contender("teacher", t_model, cfg.sample, str(t_run), t_flops),
            Contender("distilled", d_model, plain, str(d_run), read_flops(d_run)["total"]),
            Contender("data_only", c_model, cfg.sample, str(c_run), read_flops(c_run)["total"]),
            Contender("reindexed", reindexed, cfg.sample, str(t_run), t_flops)], vae


@torch.no_grad()
def score_seed(c: Contender, vae: Any, label_N: torch.Tensor, seed: int, fd: Any) -> dict[str, float]:
    """FD, sampling FLOPs per image and loop seconds per sample() call of one seed's images."""
    from pretrain.sampling.batches import sample_in_batches

    s = copy.deepcopy(c.sample_cfg)
    s.seed = seed
    stats: dict[str, Any] = {}
    images = torch.cat([img for img, _ in sample_in_batches(c.model, vae, label_N, s, stats=stats)])
    calls = -(-len(label_N) // s.batch_size)
    return {"fd": fd(images), "sampling_flops": stats["flops"] / len(label_N), "latency_s": stats["loop_s"] / calls}


def summarise(seeds: pd.DataFrame, entries: list[Contender], fd_metric: str) -> pd.DataFrame:
    """distill.csv from the per-seed rows: means, the FD interval, and the models' descriptions."""
    rows = []
    for c in entries:
        per = seeds[seeds["model"] == c.name]
        fd, low, high = mean_ci(per["fd"])
        rows.append({"model": c.name, "scales": len(c.model.patch_nums), "sampling_flops": per["sampling_flops"].mean(),
                     "latency_s": per["latency_s"].mean(), "fd": fd, "fd_ci_low": low, "fd_ci_high": high,
                     "n_seeds": len(per), "patch_nums": "-".join(map(str, c.model.patch_nums)),
                     "train_flops": c.train_flops, "fd_metric": fd_metric, "run": c.run})
    return pd.DataFrame(rows, columns=COLUMNS)


def distill_goal(table: pd.DataFrame, seeds: pd.DataFrame) -> list[dict[str, Any]]:
    """The goal claim by claim: each a signed quantity (positive = the claim holds) with its 95%
    interval over seeds (seed s of one model paired with seed s of the other) and a verdict."""
    def fd_of(name: str) -> pd.Series:
        return seeds[seeds["model"] == name].sort_values("seed")["fd"].reset_index(drop=True)

    row = table.set_index("model")
    teacher, student, control = fd_of("teacher"), fd_of("distilled"), fd_of("data_only")
    ratio = row.loc["distilled", "sampling_flops"] / row.loc["teacher", "sampling_flops"]
    claims = []
    margin = (1 + FD_TOLERANCE) * teacher - student  # > 0: the student's FD is within 5% of the teacher's
    m, lo, hi = mean_ci(margin)
    claims.append({"claim": f"distilled FD within {FD_TOLERANCE:.0%} of the teacher's", "metric": "1.05 x FD(teacher) - FD(distilled)",
                   "value": m, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, "met", "not met"),
                   "fd_ratio": float((student / teacher).mean())})
    flops_ok = bool(ratio <= FLOPS_RATIO_GOAL)
    # the re-indexed copy samples the student schedule with the teacher's guidance: the schedule's share of the saving
    schedule_only = row.loc["reindexed", "sampling_flops"] / row.loc["teacher", "sampling_flops"]
    claims.append({"claim": f"distilled sampling FLOPs <= {FLOPS_RATIO_GOAL}x the teacher's", "metric": "FLOPs ratio",
                   "value": float(ratio), "ci_low": None, "ci_high": None, "verdict": "met" if flops_ok else "not met",
                   "schedule_only_ratio": float(schedule_only)})
    m, lo, hi = paired_ci(control, student)
    claims.append({"claim": "distilled FD below the data-only control's (same compute)", "metric": "FD(data_only) - FD(distilled)",
                   "value": m, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, "met", "not met")})
    verdicts = [c["verdict"] for c in claims]
    overall = "met" if all(v == "met" for v in verdicts) else ("not met" if "not met" in verdicts else "inconclusive")
    claims.append({"claim": "goal: all of the above", "metric": "", "value": None, "ci_low": None, "ci_high": None,
                   "verdict": overall})
    return claims


def run_study(cfg: SRDDConfig, entries: list[Contender], vae: Any, n: int, seeds: int, out: Path) -> pd.DataFrame:
    from analysis.evaluate import fd_scorer
    from pretrain.sampling.batches import class_labels

    if seeds < 2:
        raise ConfigError(f"--seeds {seeds}: an interval needs at least 2 seeds (the study asks for >= 3)")
    fd, fd_metric = fd_scorer(cfg)
    if fd is None:
        raise ConfigError(fd_metric)
    labels = class_labels([], n, entries[0].model.num_classes)
    rows = []
    for c in entries:
        for s in range(seeds):
            rows.append({"model": c.name, "seed": s, **score_seed(c, vae, labels, seed_value(cfg.sample.seed, s), fd)})
            log.info("distill study: %s seed %d: %s", c.name, s, rows[-1])
    per_seed = pd.DataFrame(rows)
    table = summarise(per_seed, entries, fd_metric)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "distill_seeds.csv", per_seed.to_csv(index=False))
    atomic_write_json(out / "distill_goal.json", distill_goal(table, per_seed))
    atomic_write_text(out / "distill.csv", table.to_csv(index=False))  # last: its presence means the study is complete
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="RUN", help="the full-schedule teacher run")
    parser.add_argument("--distilled", required=True, metavar="RUN", help="its `srdd distill` student")
    parser.add_argument("--data-only", required=True, metavar="RUN", help="its `srdd distill --data-only` control")
    parser.add_argument("--n", type=int, default=200, help="images per model and seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="output directory (default: the distilled run's parent)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.sampling.load import resolve_run

    entries, vae = contenders(cfg, args.teacher, args.distilled, args.data_only)
    out = Path(args.out) if args.out else resolve_run(args.distilled).parent
    table = run_study(cfg, entries, vae, args.n, args.seeds, out)
    print(table.to_string(index=False))
    for claim in json.loads((out / "distill_goal.json").read_text()):
        print(f"{claim['verdict']:>12}: {claim['claim']}")
    return 0


def report_section(root: Path) -> tuple[pd.DataFrame, list[str]] | None:
    """(distill.csv, the goal's lines) of a study directory for the report; None when not run."""
    path, goal = Path(root) / "distill.csv", Path(root) / "distill_goal.json"
    if not path.is_file() or not goal.is_file():
        return None
    lines = []
    for c in json.loads(goal.read_text()):
        interval = f" (95% CI {c['ci_low']:.3g} .. {c['ci_high']:.3g})" if c.get("ci_low") is not None else ""
        value = f": {c['metric']} = {c['value']:.3g}{interval}" if c.get("value") is not None else ""
        note = (f"; the schedule alone (re-indexed, same guidance): {c['schedule_only_ratio']:.3g}x, the rest is the "
                "distilled guidance (no unconditional rows)" if "schedule_only_ratio" in c else "")
        lines.append(f"**{c['verdict']}** - {c['claim']}{value}{note}")
    return pd.read_csv(path), lines
