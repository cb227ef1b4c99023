"""`srdd demo`: a real small scaling study, end to end, on the embedded MNIST default
(``--dataset cifar10`` / ``fashion-mnist``: the same study on natural images, see DATASETS).

Image shards -> tokenizer training -> pyramid precompute -> feature network -> a family
of tiny sizes x {var, srdd} masks x training seeds at one token budget -> distilled schedule ->
samples with and without refinement, one inpainting -> evaluation (FD with bootstrap intervals,
class accuracy of the samples) -> refinement at equal sampling FLOPs -> sampling-cost bench on the
trained models -> scaling fits -> the claims table (claims.json) -> executed HTML report.

Three budgets (MODES): ``srdd demo`` (``make demo``) is the quick study, sized to stay under ~25
minutes on 2 idle cores; ``--full`` adds seeds and sizes, an isoFLOP grid per mask and the
ablation grid (a few hours on 2 cores, resumable; minutes on a cluster with
``slurm.enabled=true``); ``--quick`` is the minutes-scale smoke run of the tests. Flags given
explicitly (``--sizes``, ``--seeds``, ``--tokens``, ``--eval-samples``) win over the mode's.

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
import dataclasses
import json
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
# train.val_every is set per run (VAL_POINTS validation records along each run: the curves the
# equal-compute and convergence comparisons read, analysis/study.py); every run keeps its weights
# at SNAPSHOTS of its budget, which the eval stage scores for the largest size (the FD curve of
# the "tokens to a fixed FD" claim: two more evaluations per run, ~1 minute of the demo).
SNAPSHOTS = "[0.5,0.75]"
TRAIN_DEFAULTS = ["train.batch_size=32", "train.lr_peak=3e-3", "train.warmup_frac=0.1",
                  "train.val_every=0", "train.ckpt_every=50", "train.log_every=10", f"train.snapshots={SNAPSHOTS}"]
VAL_POINTS = 8
EVAL_BATCH = 100  # images per sampler call in the evals (the sampler's per-call overhead dominates at 16)
# Local training runs at a time, one thread each: tiny models use two cores better as two
# processes than as two threads of one (small matmuls, per-step Python and norms do not split).
LOCAL_JOBS = max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class Mode:
    """A study budget: the defaults of the flags the user did not give."""

    sizes: str
    seeds: str
    tokens: float
    eval_samples: int | None  # None: the dataset's (DemoDataset.eval_samples)
    isoflop_budgets: tuple[float, ...] = ()  # training FLOPs of the isoFLOP grid (attended, pretrain/model/flops.py)
    isoflop_seeds: str = "0"
    ablation: tuple[str, ...] = ()  # `srdd ablate` overrides; empty = no ablation grid


# The quick study (make demo): three sizes so that FD can fall with size and the offset form can be
# tested, two seeds of every cell for intervals, 1M tokens (241 steps of 32 images: d3 reaches the
# val loss at which d2 samples 88% recognisable digits, measured), 300 samples per evaluation.
MODES = {
    "quick": Mode("d1,d2,d3,d4", "0", 4e5, None),
    "demo": Mode("d1,d2,d3", "0,1", 1e6, 300),
    "full": Mode("d1,d2,d3,d4", "0,1,2", 4e6, 1000, isoflop_budgets=(3e12, 1e13, 3e13), isoflop_seeds="0,1",
                 ablation=("model.size=d2", "train.tokens=2000000")),
}

# --quick --full: the smallest isoFLOP budget is ~10 steps of d2 at batch 32 (whole steps must not
# overshoot a budget by more than 10%, slurm/sweep.py)
QUICK_ISOFLOP_BUDGETS = (2e11, 4e11, 8e11)

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
# The sampler of every stage: the tiny models leave mass on implausible codes, which truncation
# (top 50 of the 512 codes, ~10%, as VAR's top-900 of 4096 is ~22%) and a stronger guidance cut
# (measured on d2 after 400 steps, 500 samples: FD-mnist-cnn 11.4 -> 6.3, class accuracy 0.59 ->
# 0.88 against VAR's cfg 1.5 without truncation; docs/claims.md).
SAMPLER_DEFAULTS = ("sample.cfg=3.0", "sample.top_k=50")

DATASETS = {
    # 300 tokenizer steps: PSNR 22.5 dB and the eval classifier reads 97% of the val reconstructions
    # correctly (98% of the originals): more steps buy the study nothing it measures
    "mnist": DemoDataset(("tokenizer.steps=300",)),
    "cifar10": DemoDataset(_NATURAL, ("tokenizer.disc_start=15",), 300),  # data.source from $SRDD_CIFAR10_DIR
    "fashion-mnist": DemoDataset(("data.source=fashion-mnist", *_NATURAL), ("tokenizer.disc_start=15",), 300),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS),
                        help="mnist (embedded) | cifar10 ($SRDD_CIFAR10_DIR or data.source=cifar10:DIR) | fashion-mnist (Debian package)")
    parser.add_argument("--sizes", default=None, help="comma-separated rows of pretrain/sizes.py (default: the mode's)")
    parser.add_argument("--masks", default="var,srdd", help="comma-separated mask presets")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated training seeds of every size x mask (data order and init; default: the mode's)")
    parser.add_argument("--tokens", type=float, default=None, help="token budget of every training run (default: the mode's)")
    parser.add_argument("--eval-samples", type=int, default=None, help="generated images per evaluation (default: the mode's)")
    parser.add_argument("--study", default=None, help="study directory under SRDD_HOME (demo, or demo-<dataset>)")
    parser.add_argument("--quick", action="store_true",
                        help="minutes-scale smoke run (tiny budgets everywhere), for tests")
    parser.add_argument("--full", action="store_true",
                        help="the whole study: more seeds, the isoFLOP grid per mask, the ablation grid (hours on 2 cores)")


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
    seeds: list[int] = field(default_factory=lambda: [0])
    mode: Mode = MODES["demo"]
    summary: list[tuple[str, str, float, float, float]] = field(default_factory=list)  # stage, status, s, cpu s, load

    @property
    def root(self) -> Path:
        return home_dir() / self.name

    def run(self, size: str, mask: str, seed: int = 0) -> str:
        from slurm.runs import seeded_run_name

        return seeded_run_name(f"{self.name}/{size}-{mask}", seed)

    @property
    def runs(self) -> list[str]:
        return [self.run(s, m, seed) for s in self.sizes for m in self.masks for seed in self.seeds]

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


def _srdd_many(study: Study, stage_args: list[list[str]]) -> None:
    """Several ``srdd`` stage commands, LOCAL_JOBS at a time with one thread each (independent
    evaluations: like the training runs, they use the cores better side by side)."""
    cmds = [[sys.executable, "-m", "pretrain.cli", *args, *study.overrides] for args in stage_args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // LOCAL_JOBS))}
    running: list[tuple[list[str], subprocess.Popen]] = []
    failed: list[str] = []
    while cmds or running:
        while cmds and len(running) < LOCAL_JOBS:
            cmd = cmds.pop(0)
            log.info("$ %s", shlex.join(cmd))
            running.append((cmd, subprocess.Popen(cmd, cwd=REPO, env=env)))
        time.sleep(0.5)
        for cmd, proc in [r for r in running if r[1].poll() is not None]:
            running.remove((cmd, proc))
            if proc.returncode:
                failed.append(f"(exit {proc.returncode}) {shlex.join(cmd)}")
    if failed:
        raise SystemExit("srdd demo: stage command(s) failed: " + "; ".join(failed))


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
    # A cached val reference of an earlier network of this name is now stale (the evals would refuse it)
    from analysis.evaluate import val_reference_path
    from analysis.metrics.networks import load_feature_net

    val_reference_path(cfg, load_feature_net(cfg.eval, cfg.data.source)).unlink(missing_ok=True)
    return True


def train_config(study: Study, size: str, mask: str, seed: int = 0) -> SRDDConfig:
    """One training run of the study: the demo's defaults, one rank (on the local cluster a job
    takes one CPU, so two run side by side), VAL_POINTS validation passes along the run, then the
    user's overrides. Seeds differ in ``seed`` and ``run_name`` only."""
    from pretrain.train.budget import tokens_per_sample, total_steps

    cluster = ["slurm.cpus_per_task=1"] if study.slurm else []
    overrides = [*TRAIN_DEFAULTS, "slurm.ranks_per_node=1", *cluster, f"run_name={study.run(size, mask, seed)}",
                 f"model.size={size}", f"model.mask={mask}", f"train.tokens={study.tokens}", f"seed={seed}"]
    cfg = load_config(overrides=[*overrides, *study.overrides])
    steps = total_steps(cfg.train, tokens_per_sample(cfg.tokenizer.patch_nums))
    return load_config(overrides=[*overrides, f"train.val_every={max(1, steps // VAL_POINTS)}", *study.overrides])


def stage_train(study: Study, cfg: SRDDConfig) -> bool:
    """Every size x mask x seed through the one submit function (slurm/runs.py), then ``runs.csv``."""
    from analysis.runs_table import run_row, write_runs_csv
    from slurm.runs import COMPLETED, run_status, train_runs

    cfgs = [train_config(study, s, m, seed) for s in study.sizes for m in study.masks for seed in study.seeds]
    todo = [c.run_name for c in cfgs if run_status(run_dir(c), c) != COMPLETED]
    statuses = train_runs(cfgs, timeout_s=3 * 3600, local_jobs=LOCAL_JOBS)
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
    """Every run: FD (+ bootstrap replicates), class accuracy, ...; the largest size also FD against
    the number of scales decoded (the coarse-to-fine claim) and FD of its snapshots (convergence
    to a fixed FD). The training runs' own final val pass is the val loss, so no extra val batches here."""
    todo = [run for run in study.runs if not list((home_dir() / run / "eval").glob("*.json"))]
    largest = lambda run: run.split("/")[-1].startswith(f"{study.sizes[-1]}-")  # noqa: E731
    _srdd_many(study, [["eval", "--run", run, "--samples", str(study.eval_samples), "--val-batches", "0", "--runs-csv", "none",
                        f"sample.batch_size={EVAL_BATCH}", *(["--fd-by-scales", "--snapshots"] if largest(run) else [])]
                       for run in todo])
    # one writer of runs.csv: the evals ran side by side, so their columns are added here
    _eval_columns_to_runs_csv(study)
    return bool(todo)


def _eval_columns_to_runs_csv(study: Study) -> None:
    from analysis.evaluate import runs_csv_columns, update_runs_csv

    for run in study.runs:
        records = sorted((home_dir() / run / "eval").glob("step*.json"))
        if records:
            update_runs_csv(study.root / "runs.csv", run.split("/")[-1], runs_csv_columns(json.loads(records[-1].read_text())))


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
    """Sampling latency, FLOPs and KV memory of the largest trained VAR and SRDD models (seed 0)."""
    out = study.root / "bench" / "sampling.json"
    if out.exists():
        return False
    runs = [study.run(study.sizes[-1], m) for m in ("var", "srdd") if m in study.masks]
    repeats = ["--batch", "2", "--repeats", "2"] if study.quick else ["--batch", "8", "--repeats", "5"]
    _run([sys.executable, "-m", "bench.sampling", "--runs", ",".join(runs), *repeats, "--json", str(out)])
    return True


def stage_isoflop(study: Study, cfg: SRDDConfig) -> bool:
    """--full: the isoFLOP grid (every size at each FLOP budget, per mask and seed) through the sweep."""
    from slurm.sweep import grid, run_sweep

    budgets = study.mode.isoflop_budgets
    if not budgets:
        return False
    seeds = [int(x) for x in study.mode.isoflop_seeds.split(",")]
    base = [*TRAIN_DEFAULTS, "slurm.ranks_per_node=1", "train.val_every=0", *study.overrides]
    cfgs = grid(f"{study.name}/isoflop", study.sizes, study.masks, [], budgets, base, seeds)
    table = study.root / "isoflop" / "runs.csv"
    rows = run_sweep(cfgs, table, timeout_s=24 * 3600, local_jobs=LOCAL_JOBS)
    failed = [r["run"] for r in rows if r["status"] != "completed"]
    if failed:
        raise SystemExit(f"srdd demo: isoFLOP runs did not complete: {failed}")
    return True


def stage_ablation(study: Study, cfg: SRDDConfig) -> bool:
    """--full: Hong & Belkadi's 2x2x2 grid (slurm/ablate.py) into <study>/ablation/."""
    if not study.mode.ablation or (study.root / "ablation" / "ablation.csv").exists():
        return False
    _srdd(study, "ablate", f"run_name={study.name}", *TRAIN_DEFAULTS, *study.mode.ablation,
          "--fd-samples", str(study.eval_samples))
    return True


def stage_fit(study: Study, cfg: SRDDConfig) -> bool:
    """Per mask: L(N) at the study's token budget, the pure power law and the offset form when the
    data calls for it (analysis/scaling/choose.py, its reason in ``fits/form_<mask>.json``); with
    --full also Chinchilla and isoFLOP fits of the isoFLOP grid. Seeds repeat a size: the bootstraps
    resample them (analysis/scaling/fit.py). In this process (`srdd fit`'s own function); a form the
    data cannot support is noted in ``fits/notes.json``, not fatal: the report says so too."""
    from analysis.scaling.choose import choose_form
    from analysis.scaling.cli import fit_config, fit_to_files
    from analysis.scaling.table import RunsTableError
    from pretrain.outputs import atomic_write_json

    fits = study.root / "fits"
    fits.mkdir(parents=True, exist_ok=True)
    base = fit_config(cfg, argparse.Namespace())
    notes: dict[str, str] = {}

    def fit(path: Path, form: str, out: str) -> None:
        try:
            fit_to_files(path, dataclasses.replace(base, form=form), fits / out)
        except (RunsTableError, FloatingPointError) as err:
            notes[out] = str(err)

    tables = [("", study.root / "runs.csv", ("power",))]
    if (study.root / "isoflop" / "runs.csv").exists():
        tables.append(("isoflop_", study.root / "isoflop" / "runs.csv", ("chinchilla", "isoflop")))
    for prefix, table_path, forms in tables:
        for mask, rows in pd.read_csv(table_path).groupby("mask"):
            path = fits / f"{prefix}runs_{mask}.csv"
            rows.to_csv(path, index=False)
            chosen = list(forms)
            if not prefix:
                choice = choose_form(rows)
                atomic_write_json(fits / f"form_{mask}.json", {"form": choice.form, "reason": choice.reason,
                                                               "p_value": choice.p_value})
                chosen += [choice.form] if choice.form != "power" else []
            for form in chosen:
                fit(path, form, f"{form.replace('+', '_')}_{mask}.json")
    atomic_write_json(fits / "notes.json", notes)
    return True


def stage_claims(study: Study, cfg: SRDDConfig) -> bool:
    """claims.json: every claim's verdict from the intervals of what the study ran (analysis/claims.py)."""
    _srdd(study, "claims", "--study", str(study.root))
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
    ("bench", "sampling cost of the trained var and srdd models", stage_bench),
    ("isoflop", "--full: isoFLOP grid per mask (compute-optimal N and D)", stage_isoflop),
    ("ablation", "--full: the 2x2x2 Laplacian-pyramid ablation grid", stage_ablation),
    ("fit", "scaling fits per mask (power / offset form, Chinchilla + isoFLOP with --full)", stage_fit),
    ("claims", "the claims table: verdicts from the intervals", stage_claims),
    ("report", "executed HTML report", stage_report),
]


def study_overrides(dataset: str, quick: bool, user: list[str]) -> list[str]:
    """What every stage gets: the demo's sampler, the dataset's settings, then --quick's toy budgets, then the user's."""
    preset = DATASETS[dataset]
    source = []
    if dataset == "cifar10" and not any(o.startswith("data.source=") for o in user):
        directory = os.environ.get(CIFAR_ENV, "")
        if not directory or not Path(directory).is_dir():
            raise SystemExit(f"srdd demo --dataset cifar10: set {CIFAR_ENV} to the CIFAR-10 directory (train.tar.gz + "
                             f"test.tar.gz, docs/data.md) or pass data.source=cifar10:DIR (got {CIFAR_ENV}={directory!r})")
        source = [f"data.source=cifar10:{directory}"]
    return [*SAMPLER_DEFAULTS, *source, *preset.overrides, *_quick_overrides(quick),
            *(preset.quick_overrides if quick else ()), *user]


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def make_study(args: argparse.Namespace, cfg: SRDDConfig, overrides: list[str]) -> Study:
    """The study the flags ask for: explicit flags, else the mode's budget (MODES)."""
    dataset = getattr(args, "dataset", "mnist")
    quick = getattr(args, "quick", False)
    mode = MODES["full" if getattr(args, "full", False) else "quick" if quick else "demo"]
    if quick and getattr(args, "full", False):  # the full study's structure at toy budgets (tests)
        mode = dataclasses.replace(mode, tokens=8000, isoflop_budgets=QUICK_ISOFLOP_BUDGETS, isoflop_seeds="0",
                                   ablation=("model.size=d1", "train.tokens=4000"))
    pick = lambda name, default: default if getattr(args, name, None) is None else getattr(args, name)  # noqa: E731
    return Study(
        name=getattr(args, "study", None) or ("demo" if dataset == "mnist" else f"demo-{dataset}"),
        sizes=_csv(pick("sizes", mode.sizes)),
        masks=_csv(getattr(args, "masks", "var,srdd")),
        tokens=int(pick("tokens", mode.tokens)),
        eval_samples=pick("eval_samples", mode.eval_samples) or DATASETS[dataset].eval_samples,
        slurm=cfg.slurm.enabled,
        overrides=overrides,
        quick=quick,
        seeds=[int(x) for x in _csv(pick("seeds", mode.seeds))],
        mode=mode,
    )


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    dataset = getattr(args, "dataset", "mnist")
    overrides = study_overrides(dataset, getattr(args, "quick", False), list(getattr(args, "overrides", [])))
    cfg = load_config(getattr(args, "config", None), overrides)  # the stages' view: paths follow the dataset
    study = make_study(args, cfg, overrides)
    if "srdd" not in study.masks:
        raise SystemExit("srdd demo: --masks must include srdd (the distillation and editing stages use it)")
    t_start, cpu_start = time.perf_counter(), _children_cpu_s()
    for name, what, fn in STAGES:
        t0, cpu0 = time.perf_counter(), _children_cpu_s()
        log.info("demo stage %s: %s", name, what)
        status = "done" if fn(study, cfg) else "skipped (complete)"
        seconds, cpu_s = time.perf_counter() - t0, _children_cpu_s() - cpu0
        study.summary.append((name, status, seconds, cpu_s, os.getloadavg()[0]))
        print(f"[demo] {name:<10} {status:<20} {seconds:8.1f} s  cpu {cpu_s:8.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    # cpu_s: CPU seconds of the stage's subprocesses (user + system): what the stage costs whatever else
    # shares the machine; load: the 1-minute load average when it ended (above the core count, the
    # wall times are stretched by other processes).
    print(f"\n{'stage':<10} {'status':<20} {'time_s':>8} {'cpu_s':>8} {'load':>5}")
    for name, status, seconds, cpu_s, load in study.summary:
        print(f"{name:<10} {status:<20} {seconds:8.1f} {cpu_s:8.1f} {load:5.1f}")
    print(f"{'total':<10} {'':<20} {time.perf_counter() - t_start:8.1f} {_children_cpu_s() - cpu_start:8.1f}")
    print(f"report: {study.root / 'report.html'}")
    return 0
