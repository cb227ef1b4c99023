"""What a training job hands the harness (``pretrain.train.trainer.Trainer``): the task interface.

A task owns its model(s), their DeepSpeed engines (built by ``pretrain.engine.build_engine``),
its data and its outputs; the harness owns the loop and every guarantee around it (the NaN/inf
guard agreed across ranks, checkpoints with a completion marker, RNG and loader position, exact
resume, preemption, metrics, progress). Call order, on every rank::

    frozen()                                 before anything is built: a resume that disagrees is refused
    setup()                                  build models, engines, loaders; fills ``engines``
    resized_state(saved) -> state            only when resuming on another number of ranks
    load_state_dict(state)                   only when resuming (after the engines and RNG are restored)
    begin(progress, log)                     at every (re)start, after any resume
    batches()                                the resumable micro-batch iterator (created after any resume)
    per micro-batch: loss(batch) -> StepLoss; accumulate(out) once all ranks accepted it
    per step:        after_step(step); record(window) on log steps; validate(step) on val steps
    state_dict()                             at every checkpoint (per rank: loader position, running sums)
    finish(progress, log)                    at the end, unless every file in ``outputs`` exists

``engines`` is ordered: the first is the main one (its lr and grad norm are logged, it is the
one whose weights are exported, consolidated: ``pretrain.train.export.consolidated_state_dict``,
called by all ranks). ``outputs`` are the files ``finish`` writes: a run is finished when they
all exist, and the harness removes them when a run is (re)opened before its last step (a longer
budget), so no stale result stands beside a run in progress. ``log(record)`` appends to
metrics.jsonl (rank 0; a no-op elsewhere); ``finish`` logs its records before writing its
outputs, so a job killed in between redoes both. ``StepLoss.objectives`` names the engines that take a
backward/step for that micro-batch; every micro-batch of one step must name the same ones.

World size: a task whose ``frozen()`` holds ``world_size`` resumes only on as many ranks as
saved. Others resume on any number (pretrain/train/elastic.py): the harness re-partitions the
engines and calls ``resized_state`` with every saved rank's state to get this rank's (global
parts such as a loader position are the same on all ranks; per-rank partial sums add up on one).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

from pretrain.config.train import TrainConfig


Log = Callable[[dict[str, Any]], None]


@dataclass
class StepLoss:
    """One micro-batch: the objective per engine (scalar, differentiable) and what the task logs."""
    objectives: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    """Counters that survive restarts (stored in each checkpoint's meta.json)."""
    step: int = 0
    time_s: float = 0.0  # training wall time summed over all jobs of the run


@dataclass(frozen=True)
class Window:
    """A training record's step and the optimizer steps since the previous record."""
    step: int
    steps: int
    seconds: float  # training time of those steps: validation and checkpoints excluded


@dataclass(frozen=True)
class Schedule:
    """How long a task trains and how often the harness logs, validates and checkpoints."""
    total_steps: int
    grad_accum: int = 1
    log_every: int = 10
    val_every: int = 0  # 0 = only the task's own end-of-run validation
    ckpt_every: int = 100
    keep_last: int = 2
    milestones: tuple[int, ...] = ()
    max_bad_steps: int = 5
    stop_after: int = 0
    debug_record: bool = False
    wandb: str = "offline"
    wandb_project: str = "srdd"

    @classmethod
    def from_train(cls, train: TrainConfig, total_steps: int, **overrides: Any) -> "Schedule":
        """The ``train.*`` cadence; a task's own keys (e.g. ``tokenizer.log_every``) go in ``overrides``."""
        base = cls(total_steps=total_steps, grad_accum=train.grad_accum, log_every=train.log_every,
                   val_every=train.val_every, ckpt_every=train.ckpt_every, keep_last=train.keep_last,
                   milestones=tuple(train.milestones), max_bad_steps=train.max_bad_steps, stop_after=train.stop_after,
                   debug_record=train.debug_record, wandb=train.wandb, wandb_project=train.wandb_project)
        return dataclasses.replace(base, **overrides)


class WindowMeans:
    """Means of per-micro-batch values over a logging window (this rank's; part of a task's state)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def pop(self) -> dict[str, float]:
        """The window's means; starts the next window."""
        means = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return means

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.n = dict(state["sums"]), int(state["n"])


class Task(Protocol):
    kind: str  # the ``kind`` of its training records in metrics.jsonl
    schedule: Schedule
    engines: dict[str, Any]
    outputs: tuple[Path, ...]

    def frozen(self) -> dict[str, Any]: ...
    def setup(self) -> None: ...
    def batches(self) -> Iterator[Any]: ...
    def loss(self, batch: Any) -> StepLoss: ...
    def accumulate(self, out: StepLoss) -> None: ...
    def after_step(self, step: int) -> None: ...
    def record(self, window: Window) -> dict[str, Any]: ...
    def validate(self, step: int) -> dict[str, Any] | None: ...
    def begin(self, progress: Progress, log: Log) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def resized_state(self, saved: list[dict[str, Any]]) -> dict[str, Any]: ...
    def finish(self, progress: Progress, log: Log) -> None: ...


class TaskDefaults:
    """No-op hooks, so a task spells out only what it does."""

    def frozen(self) -> dict[str, Any]:
        return {}

    def accumulate(self, out: StepLoss) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass

    def validate(self, step: int) -> dict[str, Any] | None:
        return None

    def begin(self, progress: Progress, log: Log) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def resized_state(self, saved: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} cannot resume on another number of ranks "
                                  "(put world_size in its frozen keys)")
