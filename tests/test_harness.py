"""The training harness (pretrain/train/trainer.py): every task gets the same guarantees.

Each task runs as its real `srdd` stage under torchrun with 2 gloo ranks and real DeepSpeed
engines: interrupted (SIGKILL of every process; USR2, submitit's signal, for `srdd train`) and
rerun, it writes the same metrics.jsonl and the same weights as an uninterrupted run; a NaN on
one rank is skipped by both; ZeRO-3 exports whole weights equal to ZeRO-0's. Sizes are tiny
(d1 transformer, 16px tokenizer, tens of steps) so each launch costs mostly its start-up.
"""
from __future__ import annotations

import ast
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from analysis.metrics.cnn import ClassifierCNN, save_classifier
from pretrain.outputs import read_jsonl
from pretrain.train.checkpoint import MARKER
from pretrain.train.signals import FLAG_FILE, REQUEUE_FILE
from tests.plugins.training_runs import (REPO, STRAIGHT_TRAIN, kill_when, last_step, ranks_of, records, run_srdd,
                                         start_srdd, train_overrides)

TIMING_KEYS = {"time_s", "tokens_per_s", "images_per_s"}  # wall-clock: the only values allowed to differ
TOKENIZER = ["tokenizer.ch=8", "tokenizer.ch_mult=[1,2]", "tokenizer.z_channels=4", "tokenizer.vocab_size=32",
             "tokenizer.norm_groups=4", "tokenizer.patch_nums=[1,2,4,8]", "data.resolution=16",
             "tokenizer.batch_size=16", "tokenizer.lr=3e-3", "tokenizer.steps=12", "tokenizer.log_every=2",
             "tokenizer.val_every=0", "tokenizer.val_batches=2", "tokenizer.ckpt_every=4",
             "tokenizer.dead_code_every=0", "tokenizer.lpips=off", "train.warmup_frac=0", "train.wandb=disabled"]
NAN_AT = {"SRDD_NAN_RANK": "1", "SRDD_NAN_STEP": "5"}  # tests/fixtures/nan_injection.py: step 6's first batch


# ---- no training loop outside the harness ----------------------------------------------------
PLATFORM = ("pretrain", "data_pipeline", "analysis", "slurm", "bench")
# bench/train_step.py times plain-torch steps of the model code on purpose, without DeepSpeed: ours
# against VAR's own models.VAR, and SRDD's mask against VAR's on one set of shared weights.
NOT_TRAINING = {"bench/train_step.py"}


def test_only_the_harness_calls_backward():
    """Every gradient in the platform goes through pretrain/train/ (and so through its NaN guard)."""
    calls = []
    for package in PLATFORM:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("pretrain/train/") or rel in NOT_TRAINING:
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
                    calls.append(f"{rel}:{node.lineno}")
    assert calls == [], f"backward outside the training harness: {calls}"
    harness = [p for p in (REPO / "pretrain" / "train").glob("*.py") if ".backward(" in p.read_text()]
    assert [p.name for p in harness] == ["step.py"]  # the test would pass vacuously if nothing matched


# ---- the tasks, as their stages ---------------------------------------------------------------
@dataclass
class Task:
    stage: str
    kind: str  # its training records
    args: Callable[["Harness", str], list[str]]  # (fixtures, run) -> the stage's arguments
    export: str  # the exported weights, relative to home/<run>
    state: str = ""  # where metrics.jsonl and checkpoints live, relative to home/<run>
    module: str = "pretrain.cli"
    env: dict[str, str] = field(default_factory=dict)
    interrupts: tuple[signal.Signals, ...] = (signal.SIGKILL,)


TASKS = {
    "train": Task("train", "train", lambda h, run: [*h.train_args, *STRAIGHT_TRAIN, "train.ckpt_every=2",
                                                    f"run_name={run}"],
                  "model.pt", interrupts=(signal.SIGKILL, signal.SIGUSR2)),
    "tokenizer": Task("tokenizer-train", "tokenizer_train",
                      lambda h, run: [*TOKENIZER, f"data.shards_dir={h.mnist_shards}", f"run_name={run}"],
                      "tokenizer.pt", module="tests.fixtures.nan_injection", env=NAN_AT),
    "distill": Task("distill", "distill",
                    lambda h, run: ["--teacher", str(h.teacher), "--steps", "8", "--teacher-samples", "48", *h.data_args,
                                    "train.batch_size=8",
                                    "train.grad_accum=2", "train.lr_peak=1e-3", "train.warmup_frac=0",
                                    "train.log_every=1", "train.ckpt_every=3", "train.wandb=disabled",
                                    f"run_name={run}"],
                    "model.pt"),
    "policy": Task("policy-train", "policy_train",
                   lambda h, run: ["--ckpt", str(h.teacher), "--out", str(h.home / run), "--steps", "300",
                                   "--trajectories", "4", *h.data_args, f"eval.net_ckpt={h.eval_net}",
                                   "sample.batch_size=8", "train.log_every=5", "train.ckpt_every=50",
                                   "train.wandb=disabled"],
                   "policy.pt"),
    "eval_net": Task("eval-net-train", "eval_net_train",
                     lambda h, run: [f"data.shards_dir={h.mnist_shards}", f"eval.net_ckpt={h.home / run / 'net.pt'}",
                                     "eval.net_epochs=2", "eval.net_batch_size=32", "train.log_every=1",
                                     "train.ckpt_every=5", "train.wandb=disabled"],
                     "net.pt", state="net-train"),
}


class Harness:
    """The fixtures every case needs, and the uninterrupted (straight) run of each task, made once."""

    def __init__(self, home: Path, mnist_shards: Path, pyramid_shards: Path, tokenizer: Path, teacher: Path):
        self.home, self.mnist_shards, self.teacher = home, mnist_shards, teacher
        self.eval_net = home / "eval_net.pt"  # policy-train's score network (random init: plumbing, not quality)
        torch.manual_seed(0)
        save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), self.eval_net, {"name": "mnist-cnn"})
        self.data_args = [f"data.pyramids_dir={pyramid_shards}", f"tokenizer.ckpt={tokenizer}"]
        self.train_args = train_overrides(pyramid_shards, tokenizer)
        self._straight: dict[str, Path] = {"train": teacher.parent}  # the shared straight_train_run

    def run(self, task: str, run: str, extra: tuple[str, ...] = ()) -> None:
        t = TASKS[task]
        run_srdd(self.home, t.stage, [*t.args(self, run), *extra], ranks=2, module=t.module, env=t.env)

    def straight(self, task: str) -> Path:
        """home of the straight run (named "straight"), run on first use."""
        if task not in self._straight:
            self.run(task, f"straight-{task}")
            self._straight[task] = self.home
        return self._straight[task]

    def run_dir(self, task: str, run: str, home: Path | None = None) -> Path:
        return (home or self.home) / run / TASKS[task].state

    def straight_dir(self, task: str) -> Path:
        return self.run_dir(task, "straight" if task == "train" else f"straight-{task}", self.straight(task))

    def straight_export(self, task: str) -> Path:
        return self.straight(task) / ("straight" if task == "train" else f"straight-{task}") / TASKS[task].export


@pytest.fixture(scope="session")
def harness(tmp_path_factory, mnist_shards, pyramid_shards, tiny_tokenizer_ckpt, straight_train_run) -> Harness:
    return Harness(tmp_path_factory.mktemp("harness"), mnist_shards, pyramid_shards, tiny_tokenizer_ckpt,
                   straight_train_run)


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run_dir / "metrics.jsonl")]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.parent.name[5:]) for p in (run_dir / "checkpoints").glob(f"step_*/{MARKER}"))


def past_a_checkpoint(run_dir: Path, kind: str) -> Callable[[], bool]:
    """Ready once a complete checkpoint exists and steps after it were logged (a resume must redo them)."""
    return lambda: bool(steps := checkpoint_steps(run_dir)) and last_step(run_dir, kind) > steps[-1]


def usr2_then_requeue_note(harness: Harness, task: Task, run: str, log: Path) -> None:
    """USR2 to every rank of a running job (as submitit delivers it): it checkpoints at the next step
    boundary, leaves REQUEUE and exits 0 without training further."""
    run_dir = harness.run_dir("train", run)
    proc = start_srdd(harness.home, task.stage, task.args(harness, run), log, ranks=2, env=task.env)
    start = last_step(run_dir, task.kind)
    deadline = time.monotonic() + 300
    while proc.poll() is None and last_step(run_dir, task.kind) <= start and time.monotonic() < deadline:
        time.sleep(0.005)  # at least one step of this job
    assert proc.poll() is None, f"the job ended before the signal:\n{log.read_text()[-3000:]}"
    at = last_step(run_dir, task.kind)
    for rank in ranks_of(proc):
        rank.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    stopped = last_step(run_dir, task.kind)
    assert at < stopped <= at + 2  # the step in flight (or the next, if the signal missed its stop vote)
    assert checkpoint_steps(run_dir)[-1] == stopped  # checkpointed exactly where it stopped
    assert (run_dir / REQUEUE_FILE).is_file() and not (run_dir / FLAG_FILE).exists()
    assert not (run_dir / "final.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_interrupted_then_rerun_gives_identical_records_and_weights(harness, name, tmp_path):
    """SIGKILL every process once steps past a checkpoint were logged, rerun: the same metrics.jsonl
    (all records, every value but wall-clock ones) and bit-identical exported weights. `srdd train`
    is also sent USR2 in a second job before the final rerun."""
    task, run = TASKS[name], f"killed-{name}"
    reference, reference_export = harness.straight_dir(name), harness.straight_export(name)
    run_dir, log = harness.run_dir(name, run), tmp_path / "killed.log"
    for sig in task.interrupts:
        if sig == signal.SIGKILL:
            proc = start_srdd(harness.home, task.stage, task.args(harness, run), log, ranks=2, module=task.module,
                              env=task.env)
            assert kill_when(proc, past_a_checkpoint(run_dir, task.kind)), \
                f"the run ended (exit {proc.returncode}) before it could be killed:\n{log.read_text()[-3000:]}"
        else:
            usr2_then_requeue_note(harness, task, run, log)
    harness.run(name, run)
    assert comparable(run_dir) == comparable(reference)
    ours, theirs = weights(harness.home / run / task.export), weights(reference_export)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not (run_dir / REQUEUE_FILE).exists()  # a restart clears the previous job's note


@pytest.mark.slow
def test_nan_on_one_rank_is_skipped_on_both(harness):
    """tokenizer-train with a NaN loss on rank 1 at step 6 (tests/fixtures/nan_injection.py): rank 0,
    whose own loss was finite, logs the skip; the run finishes (no rank waits in a collective the
    other skipped: the launch has a timeout) and every logged loss is finite."""
    run = harness.straight_dir("tokenizer")
    logged = records(run, "tokenizer_train")
    assert {step: r["skipped_batches"] for step, r in logged.items()} == {2: 0, 4: 0, 6: 1, 8: 0, 10: 0, 12: 0}
    assert all(math.isfinite(r["loss"]) for r in logged.values())
    assert (harness.straight_export("tokenizer")).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tokenizer", "distill"])
def test_zero3_export_equals_zero0(harness, name):
    """Same seed, data and steps under ZeRO-3 (parameters partitioned over the 2 ranks) and ZeRO-0:
    the exported weights are whole (same keys, shapes, dtypes) and equal up to float rounding.

    Tolerance: the two stages reduce gradients in a different order (ZeRO-3 reduce-scatters its
    partitions, ZeRO-0 all-reduces whole buckets), so gradients differ in the last fp32 bits
    (~1e-7 relative). Adam turns a gradient into a step of at most ~lr, smoothly in the gradient,
    so those bits move a weight by far less than lr * 1e-3 per step: atol = steps * lr * 1e-3
    (measured: ~1.5e-7 for both tasks). One exception, bounded by steps * lr instead: the key bias
    of the tokenizer's attention (the middle third of ``qkv.bias``). Softmax is invariant to it,
    so its true gradient is 0 and what reaches Adam is rounding noise, which Adam normalises into
    steps of ~lr in either direction. The weights must also have moved from their initial values
    by more than 100 x atol, or the comparison would say nothing."""
    t, run = TASKS[name], f"zero3-{name}"
    harness.run(name, run, ("train.zero_stage=3",))
    z3, z0 = weights(harness.home / run / t.export), weights(harness.straight_export(name))
    assert z3.keys() == z0.keys() and all(z3[k].shape == z0[k].shape and z3[k].dtype == z0[k].dtype for k in z0)
    steps, lr = (12, 3e-3) if name == "tokenizer" else (8, 1e-3)
    atol = steps * lr * 1e-3
    diff = {k: (z3[k].double() - z0[k].double()).abs() for k in z0 if z0[k].is_floating_point()}
    for k in diff:
        if k.endswith("qkv.bias"):
            C = len(diff[k]) // 3
            assert float(diff[k][C:2 * C].max()) <= steps * lr, k
            diff[k][C:2 * C] = 0.0
    worst = max(float(d.max()) for d in diff.values())
    assert worst <= atol, (worst, atol)
    init = initial_weights(harness, name)
    moved = max(float((z0[k].double() - init[k].double()).abs().max()) for k in init if init[k].is_floating_point())
    assert moved > 100 * atol, (moved, atol)


def initial_weights(harness: Harness, name: str) -> dict[str, torch.Tensor]:
    """What each task starts from: the seeded tokenizer init; the teacher re-indexed for the student."""
    if name == "tokenizer":
        from pretrain.config import load_config
        from pretrain.tokenizer.checkpoint import build_tokenizer

        torch.manual_seed(0)
        return build_tokenizer(load_config(overrides=TOKENIZER).tokenizer).state_dict()
    from pretrain.distill import default_student_schedule, schedule_model
    from pretrain.train.export import load_model

    teacher, _, _ = load_model(harness.teacher / "model.pt")
    return schedule_model(teacher, default_student_schedule(teacher.patch_nums)).state_dict()
