"""`srdd demo`: a real small scaling study, end to end, on the embedded MNIST default
(``--dataset cifar10`` / ``fashion-mnist``: the same study on natural images, see DATASETS).

Image shards -> tokenizer training -> pyramid precompute -> feature network -> a family
of tiny sizes x {var, srdd} masks at one token budget -> distilled schedule -> samples
with and without refinement, one inpainting -> evaluation -> refinement at equal sampling
FLOPs -> scaling fits -> sampling-cost bench -> executed HTML report.

Every stage runs as its own ``srdd`` subprocess (the same entry points a cluster job
uses), so a crash in one stage cannot poison the next, and each stage is skipped when
its output is complete: rerunning the demo resumes it. The training runs go through the one
submit function (slurm/runs.py: ``srdd train`` here, one after another; with
``slurm.enabled=true`` one job per run on the cluster named by ``SLURM_CONF``, as a submitit job
or ``sbatch slurm/train_size.sh SIZE ...`` per ``slurm.launcher``), and the pyramid precompute
runs as a SLURM array (submitit).
Dotlist overrides given to ``srdd demo`` are passed on to every stage.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from pretrain.config import SRDDConfig, home_dir, load_config
from pretrain.outputs import run_dir
from slurm.cluster import REPO

log = logging.getLogger("srdd.demo")

# Tiny transformers need a far larger lr than VAR's 1e-4 * batch/256 to learn in a few
# hundred steps; these are the demo's training defaults (user overrides come after them).
TRAIN_DEFAULTS = ["train.batch_size=32", "train.lr_peak=2e-3", "train.warmup_frac=0.1",
                  "train.val_every=0", "train.ckpt_every=50", "train.log_every=10"]

CIFAR_ENV = "SRDD_CIFAR10_DIR"  # --dataset cifar10 reads this directory (cifar10:DIR layout, docs/data.md) unless data.source is given


@dataclass(frozen=True)
class DemoDataset:
    """What ``--dataset`` changes: settings (``data.source`` among them) applied before the user's overrides."""

    overrides: tuple[str, ...] = ()
    quick_overrides: tuple[str, ...] = ()  # after --quick's toy budgets
    eval_samples: int = 500


# Natural images: 6,000 inputs (the official split keeps test images as val: ~5,000 train + ~1,000
# val, the MNIST study's scale), a tokenizer with LPIPS-alex and the PatchGAN from half-way (600
# steps: at ~10 images/s on 2 cores the tokenizer is ~30 of the study's ~110 minutes), and
# FID-inception (packaged TF-Inception port) beside FD/IS of the dataset's own classifier in every
# eval; 300 samples per eval, since each costs ~0.5 s in the Inception network on 2 cores.
_NATURAL = ("data.limit=6000", "tokenizer.steps=600", "tokenizer.disc_start=300", "tokenizer.lpips=alex",
            "eval.fid_inception=true")
DATASETS = {
    "mnist": DemoDataset(),
    "cifar10": DemoDataset(_NATURAL, ("tokenizer.disc_start=15",), 300),  # data.source from $SRDD_CIFAR10_DIR
    "fashion-mnist": DemoDataset(("data.source=fashion-mnist", *_NATURAL), ("tokenizer.disc_start=15",), 300),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS),
                        help="mnist (embedded) | cifar10 ($SRDD_CIFAR10_DIR or data.source=cifar10:DIR) | fashion-mnist (Debian package)")
    parser.add_argument("--sizes", default="d1,d2,d3,d4", help="comma-separated rows of pretrain/sizes.py")
    parser.add_argument("--masks", default="var,srdd", help="comma-separated mask presets")
    parser.add_argument("--tokens", type=float, default=4e5, help="token budget of every training run")
    parser.add_argument("--eval-samples", type=int, default=None, help="generated images per evaluation (500; 300 for natural images)")
    parser.add_argument("--study", default=None, help="study directory under SRDD_HOME (demo, or demo-<dataset>)")
    parser.add_argument("--quick", action="store_true",
                        help="minutes-scale smoke run (tiny budgets everywhere), for tests")


@dataclass
class Study:
    """Where the study lives and what it trains; derived once from the flags."""

    name: str
    sizes: list[str]
    masks: list[str]
    tokens: int
    eval_samples: int
    slurm: bool
    overrides: list[str]
    quick: bool
    summary: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return home_dir() / self.name

    def run(self, size: str, mask: str) -> str:
        return f"{self.name}/{size}-{mask}"

    @property
    def runs(self) -> list[str]:
        return [self.run(s, m) for s in self.sizes for m in self.masks]

    @property
    def study_size(self) -> str:
        """The size whose SRDD run is distilled and whose VAR/SRDD pair is edit-scored (DISTILL_SIZE when trained)."""
        return DISTILL_SIZE if DISTILL_SIZE in self.sizes else self.sizes[-1]

    @property
    def distilled(self) -> str:
        return f"{self.name}/{self.study_size}-srdd-distilled"


def _srdd(study: Study, stage: str, *args: str) -> None:
    """Run one ``srdd`` stage as a subprocess with the study's overrides appended last."""
    cmd = [sys.executable, "-m", "pretrain.cli", stage, *args, *study.overrides]
    _run(cmd)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    log.info("$ %s", shlex.join(cmd))
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"srdd demo: stage command failed (exit {proc.returncode}): {shlex.join(cmd)}")


def _quick_overrides(quick: bool) -> list[str]:
    if not quick:
        return []
    return ["tokenizer.steps=30", "tokenizer.batch_size=16", "tokenizer.val_every=30", "tokenizer.ckpt_every=30",
            "data.limit=400", "eval.net_epochs=1", "fit.bootstrap=20"]


# ---- stages ---------------------------------------------------------------------------

def stage_shards(study: Study, cfg: SRDDConfig) -> bool:
    from data_pipeline import shards_dir

    if (shards_dir(cfg) / "manifest.json").exists():
        return False
    _srdd(study, "shards", "--source", cfg.data.source)
    return True


def stage_tokenizer(study: Study, cfg: SRDDConfig) -> bool:
    from pretrain.tokenizer import default_tokenizer_path

    if default_tokenizer_path(cfg).exists():
        return False
    _srdd(study, "tokenizer-train", "run_name=tokenizer")
    return True


def stage_pyramids(study: Study, cfg: SRDDConfig) -> bool:
    # The stage itself skips every shard whose manifest matches, so it is cheap to rerun.
    _srdd(study, "pyramids", *(["slurm.enabled=true", "slurm.cpus_per_task=1"] if study.slurm else []))
    return True


def stage_eval_net(study: Study, cfg: SRDDConfig) -> bool:
    from analysis.metrics.networks import default_classifier_path

    if default_classifier_path(cfg.eval, cfg.data.source).exists():
        return False
    _srdd(study, "eval-net-train")
    return True


def train_config(study: Study, size: str, mask: str) -> SRDDConfig:
    """One training run of the study: the demo's defaults, one rank (on the local cluster a job
    takes one CPU, so two run side by side), then the user's overrides."""
    cluster = ["slurm.cpus_per_task=1"] if study.slurm else []
    return load_config(overrides=[*TRAIN_DEFAULTS, "slurm.ranks_per_node=1", *cluster, f"run_name={study.run(size, mask)}",
                                  f"model.size={size}", f"model.mask={mask}", f"train.tokens={study.tokens}",
                                  *study.overrides])


def stage_train(study: Study, cfg: SRDDConfig) -> bool:
    """Every size x mask through the one submit function (slurm/runs.py), then ``runs.csv``."""
    from analysis.runs_table import run_row, write_runs_csv
    from slurm.runs import COMPLETED, run_status, train_runs

    cfgs = [train_config(study, s, m) for s in study.sizes for m in study.masks]
    todo = [c.run_name for c in cfgs if run_status(run_dir(c), c) != COMPLETED]
    statuses = train_runs(cfgs, timeout_s=3 * 3600)
    write_runs_csv(study.root / "runs.csv", [run_row(run_dir(c), statuses[c.run_name]) for c in cfgs])
    failed = {run: status for run, status in statuses.items() if status != COMPLETED}
    if failed:
        raise SystemExit(f"srdd demo: training runs did not complete: {failed} (logs: the runs' directories)")
    return bool(todo)


# Scale distillation and zero-shot reconstruction (issue 17), on the DISTILL_SIZE runs: the
# data-only control trains at the teacher's training compute plus the whole distillation's, so
# these stages cost at least one more training of their teacher; at d2 (d4 costs ~1.75x per step
# and ~3.3x per sample on 2 cores) the three stages take ~4 minutes (measured CPU time,
# docs/sampling.md, "In the demo"): the teacher samples DISTILL_SAMPLES images once, the student
# trains DISTILL_STEPS steps on them, the control trains for the same total FLOPs, the scoring
# samples DISTILL_STUDY_N images per model and seed and the edit study edits EDIT_STUDY_N held-out
# images per run, mask, refinement and seed.
DISTILL_SIZE = "d2"
DISTILL_SAMPLES, DISTILL_STEPS, DISTILL_STUDY_N, EDIT_STUDY_N, STUDY_SEEDS = 512, 60, 100, 24, 3
QUICK_DISTILL = {"samples": 32, "steps": 6, "study_n": 12, "edit_n": 4}  # --quick: the plumbing, not a result


def distill_runs(study: Study) -> tuple[str, str, str]:
    """(teacher, distilled student, data-only control): the study size's SRDD run and its two students."""
    return study.run(study.study_size, "srdd"), study.distilled, f"{study.name}/{study.study_size}-srdd-data-only"


def stage_distill(study: Study, cfg: SRDDConfig) -> bool:
    """The distilled student (teacher samples + training), then the data-only control at the same total FLOPs."""
    from pretrain.distill.task import read_flops

    teacher, distilled, control = distill_runs(study)
    ran = False
    if not (home_dir() / distilled / "distill.json").exists():
        samples, steps = (QUICK_DISTILL["samples"], QUICK_DISTILL["steps"]) if study.quick else (DISTILL_SAMPLES, DISTILL_STEPS)
        _srdd(study, "distill", "--teacher", teacher, "--teacher-samples", str(samples), "--steps", str(steps),
              f"run_name={distilled}", *TRAIN_DEFAULTS[:3])
        ran = True
    if not (home_dir() / control / "distill.json").exists():
        budget = read_flops(home_dir() / distilled)["total"]
        _srdd(study, "distill", "--teacher", teacher, "--data-only", "--flops", str(budget), f"run_name={control}",
              *TRAIN_DEFAULTS[:3])
        ran = True
    return ran


def stage_distill_study(study: Study, cfg: SRDDConfig) -> bool:
    """distill.csv: teacher / distilled / data-only / re-indexed, FD over seeds, sampling FLOPs and latency."""
    if (study.root / "distill.csv").exists():
        return False
    teacher, distilled, control = distill_runs(study)
    n = QUICK_DISTILL["study_n"] if study.quick else DISTILL_STUDY_N
    _srdd(study, "distill-study", "--teacher", teacher, "--distilled", distilled, "--data-only", control,
          "--n", str(n), "--seeds", str(STUDY_SEEDS), "--out", str(study.root))
    return True


def stage_edit_study(study: Study, cfg: SRDDConfig) -> bool:
    """edits.csv: inpaint/outpaint/superres of held-out images by the study size's VAR and SRDD runs, +-restart (sample.refine=sr)."""
    if (study.root / "edits.csv").exists() or "var" not in study.masks:
        return False
    runs = ",".join(study.run(study.study_size, m) for m in ("var", "srdd"))
    n = QUICK_DISTILL["edit_n"] if study.quick else EDIT_STUDY_N
    _srdd(study, "edit-study", "--runs", runs, "--n", str(n), "--seeds", str(STUDY_SEEDS), "--refine", "sr",
          "--out", str(study.root))
    return True


def stage_samples(study: Study, cfg: SRDDConfig) -> bool:
    """The largest size of each mask and the distilled student, with and without a restart round per scale."""
    runs = [study.run(study.sizes[-1], m) for m in study.masks] + [study.distilled]
    for run in runs:
        for refine in ("none", "sr"):
            if not list((home_dir() / run / "samples").glob(f"*{refine}*/grid.png")):
                plain = ["sample.cfg=0"] if run == study.distilled else []  # its targets carry the teacher's guidance
                _srdd(study, "sample", "--ckpt", run, "--n", "20", f"sample.refine={refine}", *plain)
    edit_run = study.run(study.sizes[-1], "srdd")
    if not (home_dir() / edit_run / "edits" / "inpaint").exists():
        _srdd(study, "edit", "--task", "inpaint", "--ckpt", edit_run, "--n", "8")
    return True


def stage_eval(study: Study, cfg: SRDDConfig) -> bool:
    ran = False
    for run in study.runs:
        if list((home_dir() / run / "eval").glob("*.json")):
            continue
        _srdd(study, "eval", "--run", run, "--samples", str(study.eval_samples),
              "--runs-csv", str(study.root / "runs.csv"))
        ran = True
    return ran


# The demo's refinement study: one one-pass candidate besides the defaults (the MR-equivalent that
# did best in the full study, docs/sampling.md), restart R = 1, 2, 64 images x 3 seeds per point.
REFINE_DEMO = {"images": 64, "rounds": "1,2", "trajectories": 48,
               "onepass": "sample.refine=onepass,sample.p_resample=0.3,sample.refine_rounds=2"}


def stage_refinement(study: Study, cfg: SRDDConfig) -> bool:
    """FD vs sampling FLOPs of every refinement on the largest SRDD run (docs/sampling.md, "Refinement
    study"): the learned restart policy (`srdd policy-train`), then `srdd refine-study` writes
    ``<study>/refinement.csv``. Sized to ~2 minutes on 2 cores; its intervals resolve only large FD
    differences (the report says how large). Self-correction needs a run trained with
    ``train.refine_objective``, which the demo's budget does not hold: docs/sampling.md has the full command."""
    if (study.root / "refinement.csv").exists():
        return False
    run = study.run(study.sizes[-1], "srdd")
    small = study.quick
    _srdd(study, "policy-train", "--ckpt", run, "--trajectories", "16" if small else str(REFINE_DEMO["trajectories"]),
          "--steps", "50" if small else "200")
    _srdd(study, "refine-study", "--run", run, "--out", str(study.root), "--images", "16" if small else str(REFINE_DEMO["images"]),
          "--seeds", "0,1,2", "--rounds", "1" if small else REFINE_DEMO["rounds"], "--onepass-grid", REFINE_DEMO["onepass"])
    return True


def stage_bench(study: Study, cfg: SRDDConfig) -> bool:
    out = study.root / "bench" / "sampling.json"
    if out.exists():
        return False
    size_args = ["--sizes", "d1", "--batch", "2", "--repeats", "1"] if study.quick else ["--sizes", "d2", "--repeats", "3"]
    _run([sys.executable, "-m", "bench.sampling", *size_args, "--json", str(out)])
    return True


def stage_fit(study: Study, cfg: SRDDConfig) -> bool:
    """Power law L(N) per mask (the demo has one token budget, so N is the only axis)."""
    table = pd.read_csv(study.root / "runs.csv")
    for mask, rows in table.groupby("mask"):
        path = study.root / "fits" / f"runs_{mask}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(path, index=False)
        _srdd(study, "fit", "--runs", str(path), "--form", "power", "--out", str(path.with_name(f"power_{mask}.json")))
    return True


def stage_report(study: Study, cfg: SRDDConfig) -> bool:
    _srdd(study, "report", "--runs", str(study.root), "--out", str(study.root / "report.html"),
          "--bootstrap", "20" if study.quick else "100")
    return True


STAGES: list[tuple[str, str, Callable[[Study, SRDDConfig], bool]]] = [
    ("shards", "dataset -> WebDataset image shards", stage_shards),
    ("tokenizer", "multi-scale VQ-VAE trained on the shards", stage_tokenizer),
    ("pyramids", "offline code-pyramid precompute", stage_pyramids),
    ("eval-net", "the dataset's feature network for FD/IS", stage_eval_net),
    ("train", "size family x {var, srdd} at one token budget", stage_train),
    ("distill", "SRDD student on the shorter schedule from the teacher's samples, and the data-only control", stage_distill),
    ("distill-study", "teacher vs distilled vs data-only vs re-indexed: FD, FLOPs, latency", stage_distill_study),
    ("edit-study", "zero-shot inpaint/outpaint/superres scored, VAR vs SRDD", stage_edit_study),
    ("samples", "samples with/without refinement, inpainting", stage_samples),
    ("eval", "FD / IS / precision-recall (+ FID-inception) per run", stage_eval),
    ("refine", "refinement vs the best one-pass sampler at equal sampling FLOPs", stage_refinement),
    ("bench", "sampling cost: var vs srdd vs distilled", stage_bench),
    ("fit", "power-law fits per mask", stage_fit),
    ("report", "executed HTML report", stage_report),
]


def study_overrides(dataset: str, quick: bool, user: list[str]) -> list[str]:
    """What every stage gets: the dataset's settings, then --quick's toy budgets, then the user's."""
    preset = DATASETS[dataset]
    source = []
    if dataset == "cifar10" and not any(o.startswith("data.source=") for o in user):
        directory = os.environ.get(CIFAR_ENV, "")
        if not directory or not Path(directory).is_dir():
            raise SystemExit(f"srdd demo --dataset cifar10: set {CIFAR_ENV} to the CIFAR-10 directory (train.tar.gz + "
                             f"test.tar.gz, docs/data.md) or pass data.source=cifar10:DIR (got {CIFAR_ENV}={directory!r})")
        source = [f"data.source=cifar10:{directory}"]
    return [*source, *preset.overrides, *_quick_overrides(quick), *(preset.quick_overrides if quick else ()), *user]


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    dataset = getattr(args, "dataset", "mnist")
    overrides = study_overrides(dataset, getattr(args, "quick", False), list(getattr(args, "overrides", [])))
    cfg = load_config(getattr(args, "config", None), overrides)  # the stages' view: paths follow the dataset
    study = Study(
        name=getattr(args, "study", None) or ("demo" if dataset == "mnist" else f"demo-{dataset}"),
        sizes=[s for s in getattr(args, "sizes", "d1,d2,d3,d4").split(",") if s],
        masks=[m for m in getattr(args, "masks", "var,srdd").split(",") if m],
        tokens=int(getattr(args, "tokens", 4e5)),
        eval_samples=getattr(args, "eval_samples", None) or DATASETS[dataset].eval_samples,
        slurm=cfg.slurm.enabled,
        overrides=overrides,
        quick=getattr(args, "quick", False),
    )
    if "srdd" not in study.masks:
        raise SystemExit("srdd demo: --masks must include srdd (the distillation and editing stages use it)")
    t_start = time.perf_counter()
    for name, what, fn in STAGES:
        t0 = time.perf_counter()
        log.info("demo stage %s: %s", name, what)
        status = "done" if fn(study, cfg) else "skipped (complete)"
        seconds = time.perf_counter() - t0
        study.summary.append((name, status, seconds))
        print(f"[demo] {name:<10} {status:<20} {seconds:8.1f} s", flush=True)
    print(f"\n{'stage':<10} {'status':<20} {'time_s':>8}")
    for name, status, seconds in study.summary:
        print(f"{name:<10} {status:<20} {seconds:8.1f}")
    print(f"{'total':<10} {'':<20} {time.perf_counter() - t_start:8.1f}")
    print(f"report: {study.root / 'report.html'}")
    return 0
