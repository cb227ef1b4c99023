"""The training harness: the one loop every training job runs on (docs/training.md).

    trainer = Trainer(task, run_dir, info, run_name=..., config=...)
    outcome = trainer.run()        # "complete" | "stopped" (train.stop_after) | "preempted"

The task (pretrain/train/task.py) supplies engines, batches, its loss and its outputs; the
harness gives every task the same guarantees:

- a NaN/inf objective on any rank drops that micro-batch on all ranks (pretrain/train/step.py);
- checkpoints every ``ckpt_every`` steps, at the end and on a stop request, in one format
  (pretrain/train/checkpoint.py: completion marker, every engine, per-rank RNG and task state);
- rerunning resumes from the newest complete checkpoint, exactly: the same loss records as an
  uninterrupted run; metrics.jsonl is cut back to what it held at that checkpoint; on another
  number of ranks too, for tasks that allow it (pretrain/train/elastic.py);
- SIGUSR1 / SIGUSR2 / SIGTERM or ``<run>/PREEMPT``: checkpoint at the next step boundary, write
  ``<run>/REQUEUE``, return "preempted" (pretrain/train/signals.py);
- metrics.jsonl + wandb (pretrain/train/metrics.py) and a progress bar, on rank 0;
- with ``train.debug_record``: every engine's gathered weights and Adam state at each save and
  resume, in ``<run>/debug/`` (tests compare them across world sizes).
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from pretrain.dist import DistInfo
from pretrain.outputs import atomic_path
from pretrain.train.checkpoint import CheckpointManager, check_compatible, read_meta
from pretrain.train.elastic import gathered_state
from pretrain.train.metrics import MetricsLogger
from pretrain.train.signals import REQUEUE_FILE, StopRequest, mark_for_requeue
from pretrain.train.step import OptimizerStep
from pretrain.train.task import Progress, Task, Window

log = logging.getLogger("srdd.train")


class Trainer:
    def __init__(self, task: Task, run_dir: Path, info: DistInfo, run_name: str = "",
                 config: dict[str, Any] | None = None):
        self.task, self.run_dir, self.info = task, Path(run_dir), info
        self.run_name, self.config = run_name or self.run_dir.name, config or {}
        s = task.schedule
        self.ckpts = CheckpointManager(self.run_dir / "checkpoints", info, s.keep_last, s.milestones)
        self.progress = Progress()

    def run(self) -> str:
        # DeepSpeed's ZeRO collectives trip torch's deprecation warning on every step.
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
        task, s, main = self.task, self.task.schedule, self.info.is_main
        latest = self.ckpts.latest()
        if latest is not None:  # refuse a mismatched resume before any expensive set-up
            check_compatible(read_meta(latest)["frozen"], task.frozen(), latest)
        stop = StopRequest(self.run_dir)  # from here on a signal means "checkpoint at the next step"
        metrics = None
        try:
            task.setup()
            records = self.resume(latest)
            finished = all(path.exists() for path in task.outputs)
            export = not finished or self.progress.step < s.total_steps  # decided once, alike on every rank
            if main:
                (self.run_dir / REQUEUE_FILE).unlink(missing_ok=True)  # a stale note must not requeue a later job
                if self.progress.step < s.total_steps:  # (re)opened, e.g. with a larger budget
                    for path in task.outputs:
                        path.unlink(missing_ok=True)
            metrics = MetricsLogger(self.run_dir, enabled=main, wandb_mode=s.wandb, project=s.wandb_project,
                                    run_name=self.run_name, config=self.config)
            # A finished run keeps its end-of-run records and what later stages appended (`srdd eval`);
            # an unfinished one drops what was logged after its checkpoint, it is redone.
            metrics.rewind(self.progress.step, None if finished else records)
            task.begin(self.progress, metrics.log)
            outcome = self.train(metrics, stop)
            if outcome == "complete" and export:
                task.finish(self.progress, metrics.log)
            elif outcome == "preempted" and main:
                mark_for_requeue(self.run_dir)
        finally:
            stop.restore()
            if metrics is not None:
                metrics.close()
        if dist.is_initialized():
            dist.barrier()  # every rank returns once rank 0's outputs are written
        log.info("%s: %s at step %d/%d", self.run_name, outcome, self.progress.step, s.total_steps)
        return outcome

    # ---- checkpoints -------------------------------------------------------------------
    def resume(self, latest: Path | None) -> int | None:
        """Restore engines, RNG and task state from ``latest``; the metrics records it counted
        (0 for a fresh start: nothing logged before is this run's)."""
        if latest is None:
            return 0
        meta, rank_state = self.ckpts.load(self.task.engines, latest, self.task.resized_state)
        self.task.load_state_dict(rank_state)
        self.progress = Progress(**meta["progress"])
        log.info("resumed from %s (step %d of %d)", latest, self.progress.step, self.task.schedule.total_steps)
        self.record_state(f"resumed_w{self.info.world_size}")
        return meta.get("metrics_records")

    def save(self, metrics: MetricsLogger) -> Path:
        meta = {"step": self.progress.step, "progress": vars(self.progress), "frozen": self.task.frozen(),
                "metrics_records": metrics.records}
        path = self.ckpts.save(self.task.engines, self.progress.step, meta, self.task.state_dict())
        self.record_state("saved")
        return path

    def record_state(self, event: str) -> None:
        """With ``debug_record``: every engine's ``gathered_state`` to
        ``<run>/debug/state_step<N>_<event>.pt`` (a collective; rank 0 writes)."""
        if not self.task.schedule.debug_record:
            return
        state = {name: gathered_state(engine) for name, engine in self.task.engines.items()}
        if self.info.is_main:
            with atomic_path(self.run_dir / "debug" / f"state_step{self.progress.step:08d}_{event}.pt") as tmp:
                torch.save(state, tmp)

    # ---- the loop ----------------------------------------------------------------------
    def train(self, metrics: MetricsLogger, stop: StopRequest) -> str:
        """Train to the budget; returns "complete", "stopped" (stop_after) or "preempted"."""
        task, s = self.task, self.task.schedule
        step_fn = OptimizerStep(task.engines, s.grad_accum, s.max_bad_steps, self.info.device)
        main_engine = next(iter(task.engines.values()))
        batches = task.batches()  # after the resume: the loader starts at the restored position
        steps_here, window_s, window_steps, skipped = 0, 0.0, 0, 0
        bar = tqdm(total=s.total_steps, initial=self.progress.step, desc=task.kind, disable=not self.info.is_main,
                   mininterval=1.0, dynamic_ncols=True)
        try:
            while self.progress.step < s.total_steps:
                lr = main_engine.get_lr()[0]  # the lr this step uses (the scheduler steps inside)
                t0 = time.perf_counter()
                outcome = step_fn(task, batches, stop)
                self.progress.step += 1
                step, last = self.progress.step, self.progress.step == s.total_steps
                task.after_step(step)
                dt = time.perf_counter() - t0
                self.progress.time_s += dt
                steps_here, window_s, window_steps = steps_here + 1, window_s + dt, window_steps + 1
                skipped += outcome.skipped_batches
                bar.update(1)
                if step % s.log_every == 0 or last:
                    record = {"kind": task.kind, "step": step, "lr": lr, "grad_norm": outcome.grad_norm,
                              "time_s": self.progress.time_s, "skipped_batches": skipped,
                              **task.record(Window(step, window_steps, window_s))}
                    metrics.log(record)
                    if isinstance(record.get("loss"), float):
                        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                    window_s, window_steps, skipped = 0.0, 0, 0
                if s.val_every and step % s.val_every == 0 and not last:
                    record = task.validate(step)
                    if record is not None:
                        metrics.log(record)
                stopping = outcome.stop or (s.stop_after and steps_here >= s.stop_after)
                if step % s.ckpt_every == 0 or last or stopping:
                    self.save(metrics)
                if outcome.stop:
                    return "preempted"
                if stopping and not last:
                    return "stopped"
            return "complete"
        finally:
            bar.close()
