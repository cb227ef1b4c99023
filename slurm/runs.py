"""Training runs on the top floor: the one way to submit a run and the one test of whether it is done.

    job = submit_run(cfg)                     # start cfg's run; returns at once
    wait_runs([job], timeout_s=3600)          # {run_name: status} once every job has ended
    run_status(run_dir(cfg), cfg)             # completed | incomplete | failed | stale
    train_runs(cfgs, timeout_s=3600)          # skip completed runs, submit the rest, wait (demo, sweep, ablate)

Where a run goes (``launcher``): ``local`` when ``slurm.enabled`` is false (``srdd train`` as a
subprocess, under torchrun when the plan has more than one rank), else ``slurm.launcher``:
``sbatch`` (``sbatch slurm/train_size.sh SIZE key=value...``: one torchrun per node) or
``submitit`` (one submitit job, one task per rank, ``train_job`` below). Resources come from
the plan (slurm/launch.py: the size table, ``slurm.*``). The job trains exactly ``cfg``: it is
passed as the dotlist that rebuilds it from the schema defaults (``config_overrides``).

One preemption protocol for all three (docs/training.md): the training process checkpoints on
SIGUSR1 / SIGUSR2 / SIGTERM (or a ``<run>/PREEMPT`` file) at the next step boundary, writes
``<run>/REQUEUE`` and exits 0; then the launcher requeues the job and it resumes from that
checkpoint: train_size.sh runs ``scontrol requeue``, ``train_job`` does the same on rank 0,
the local launcher starts the process again.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from pretrain.config import SRDDConfig, home_dir, load_config
from pretrain.config.fields import ConfigError
from pretrain.outputs import run_dir
from pretrain.train.signals import REQUEUE_FILE
from slurm.cluster import FINAL_STATES, REPO, LocalCluster
from slurm.launch import plan, sbatch_options

log = logging.getLogger("srdd.runs")

COMPLETED, INCOMPLETE, FAILED, STALE = "completed", "incomplete", "failed", "stale"
LAUNCHERS = ("local", "sbatch", "submitit")
TRAIN_SCRIPT = REPO / "slurm" / "train_size.sh"


def seeded_run_name(run_name: str, seed: int) -> str:
    """A run's name at training seed ``seed``: unchanged for seed 0 (the single-seed name), else ``-seed<S>``."""
    return run_name if seed == 0 else f"{run_name}-seed{seed}"


# ---- is a run complete? -------------------------------------------------------------------------
def run_status(run: Path, cfg: SRDDConfig | None = None) -> str:
    """The state of a run directory, from what the training harness leaves in it.

    completed  ``final.json`` (written last, atomically) and, when ``cfg`` is given, it is cfg's
               run: same size, mask and pyramid cell, trained to cfg's step budget
    stale      ``final.json`` of another run than ``cfg`` asks for (e.g. a larger ``train.tokens``):
               submitting cfg continues it from its last checkpoint (or is refused with the
               differing keys named, docs/training.md)
    incomplete no final.json, but a complete checkpoint: submitting again resumes it
    failed     neither: nothing finished and nothing to resume from (never started, or died
               before its first checkpoint)
    """
    run = Path(run)
    final_path = run / "final.json"
    if final_path.is_file():
        final = json.loads(final_path.read_text())
        return COMPLETED if cfg is None or _final_matches(final, cfg) else STALE
    return INCOMPLETE if _has_checkpoint(run) else FAILED


def _final_matches(final: dict[str, Any], cfg: SRDDConfig) -> bool:
    from pretrain.train.budget import tokens_per_sample, total_steps

    asked = {"step": total_steps(cfg.train, tokens_per_sample(cfg.tokenizer.patch_nums)), "size": cfg.model.size,
             "attn_window": cfg.model.window, "pyramid": cfg.pyramid.cell}
    return all(final.get(key) == value for key, value in asked.items())


def _has_checkpoint(run: Path) -> bool:
    from pretrain.dist import DistInfo
    from pretrain.train.checkpoint import CheckpointManager

    return CheckpointManager(run / "checkpoints", DistInfo(rank=0, world_size=1, local_rank=0), keep_last=1).latest() is not None


# ---- a config as a command line -----------------------------------------------------------------
def _leaves(cfg: Any) -> dict[str, Any]:
    container = OmegaConf.to_container(OmegaConf.structured(cfg))

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    return dict(walk(container, ""))


def _dotlist_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dotlist_value(v) for v in value) + "]"
    if isinstance(value, str) and OmegaConf.from_dotlist([f"k={value}"]).k != value:
        return repr(value)  # e.g. '' or '1e3', which would read back as null or a float
    return str(value)


def config_overrides(cfg: SRDDConfig) -> list[str]:
    """``key=value`` for every key where cfg differs from the schema defaults (``run_name`` and
    ``model.size`` always), so ``srdd train <these>`` trains exactly cfg. Raises ConfigError naming
    a key whose value does not survive the round trip through a command line."""
    defaults, mine = _leaves(SRDDConfig()), _leaves(cfg)
    always = ("run_name", "model.size")
    overrides = [f"{k}={_dotlist_value(v)}" for k, v in mine.items() if k in always or defaults.get(k) != v]
    rebuilt = _leaves(load_config(overrides=overrides))
    lost = [k for k, v in mine.items() if rebuilt.get(k) != v]
    if lost:
        raise ConfigError(f"{lost[0]}={mine[lost[0]]!r} cannot be passed to a training job as key=value "
                          f"(it reads back as {rebuilt.get(lost[0])!r})")
    return overrides


# ---- submitted runs -----------------------------------------------------------------------------
@dataclass
class RunJob:
    """A submitted training run. ``done()`` polls it; ``state`` names how its job ended."""

    cfg: SRDDConfig
    launcher: str
    job_id: str
    log_path: Path | None

    @property
    def run(self) -> Path:
        return run_dir(self.cfg)

    def done(self) -> bool:
        raise NotImplementedError

    @property
    def state(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        where = f"; log {self.log_path}" if self.log_path else ""
        return f"{self.cfg.run_name} ({self.launcher} job {self.job_id}, {self.state}{where})"


@dataclass
class LocalRunJob(RunJob):
    """``srdd train`` in a child process of this one; a REQUEUE note starts it again (it resumes)."""

    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    restarts: int = 0

    def start(self) -> "LocalRunJob":
        self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env)
        self.job_id = str(self.process.pid)
        return self

    def done(self) -> bool:
        if self.process.poll() is None:
            return False
        requeue = self.run / REQUEUE_FILE
        if self.process.returncode == 0 and requeue.exists():
            requeue.unlink()
            self.restarts += 1
            log.info("%s checkpointed on a stop request; restarting it (restart %d)", self.cfg.run_name, self.restarts)
            self.start()
            return False
        return True

    @property
    def state(self) -> str:
        rc = self.process.poll()
        return "RUNNING" if rc is None else "COMPLETED" if rc == 0 else f"FAILED (exit {rc})"


@dataclass
class SbatchRunJob(RunJob):
    """``sbatch slurm/train_size.sh``; the script requeues itself, so only the final state counts."""

    cluster: LocalCluster | None = None
    _state: str = "PENDING"

    def done(self) -> bool:
        self._state = self.cluster.job_state(self.job_id)
        return self._state in FINAL_STATES

    @property
    def state(self) -> str:
        return self._state


@dataclass
class SubmititRunJob(RunJob):
    job: Any = None

    def done(self) -> bool:
        return self.job.done()

    @property
    def state(self) -> str:
        from slurm.submit import job_state

        return job_state(self.job)


def _child_env() -> dict[str, str]:
    """The job's environment: this one, with SRDD_HOME absolute (jobs start in the repo root)."""
    return {**os.environ, "SRDD_HOME": str(home_dir().resolve())}


def local_command(cfg: SRDDConfig, overrides: Sequence[str]) -> list[str]:
    """``srdd train`` on this machine; under torchrun (one node) when the plan has several ranks."""
    ranks = plan(cfg).ranks_per_node
    launcher = [sys.executable, "-m", "pretrain.cli"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
        "-m", "pretrain.cli"]
    return [*launcher, "train", *overrides]


def resolve_launcher(cfg: SRDDConfig, launcher: str | None = None) -> str:
    """``launcher`` if given, else ``slurm.launcher`` when ``slurm.enabled``, else local."""
    launcher = launcher or (cfg.slurm.launcher if cfg.slurm.enabled else "local")
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    return launcher


def submit_run(cfg: SRDDConfig, launcher: str | None = None, env: dict[str, str] | None = None) -> RunJob:
    """Start cfg's training run and return at once (see the module docstring for the launchers).

    launcher: local | sbatch | submitit; default ``slurm.launcher`` when ``slurm.enabled``, else local.
    Logs: local runs write to this process's stdout/stderr; sbatch to ``<run>/slurm-<job>.out``;
    submitit to ``<run>/submitit/<job>_0_log.{out,err}``. ``env``: extra environment of a local run.
    """
    launcher = resolve_launcher(cfg, launcher)
    overrides = config_overrides(cfg)
    run = run_dir(cfg)
    run.mkdir(parents=True, exist_ok=True)
    if launcher == "local":
        job = LocalRunJob(cfg, launcher, "", None, command=local_command(cfg, overrides),
                          env={**_child_env(), **(env or {})}).start()
    elif launcher == "sbatch":
        cluster = LocalCluster.from_env()
        job_id = cluster.sbatch(TRAIN_SCRIPT, cfg.model.size, *overrides, wait=False, env=_child_env(),
                                sbatch_args=[*sbatch_options(cfg), f"--output={run.resolve()}/slurm-%j.out"])
        job = SbatchRunJob(cfg, launcher, job_id, run / f"slurm-{job_id}.out", cluster=cluster)
    else:
        job = _submit_submitit(cfg, overrides, run)
    log.info("submitted %s (%s job %s)", cfg.run_name, launcher, job.job_id)
    return job


def _submit_submitit(cfg: SRDDConfig, overrides: list[str], run: Path) -> SubmititRunJob:
    from slurm.submit import make_executor

    p = plan(cfg)
    executor = make_executor(cfg, f"srdd-{cfg.run_name.replace('/', '-')}", run / "submitit", cluster="slurm",
                             nodes=p.nodes, gpus_per_node=p.gpus_per_node, tasks_per_node=p.ranks_per_node,
                             timeout_min=p.time_min)
    job = executor.submit(train_job, overrides, str(home_dir().resolve()))
    return SubmititRunJob(cfg, "submitit", job.job_id, Path(job.paths.stdout), job=job)


def train_job(overrides: list[str], srdd_home: str) -> dict[str, str]:
    """Body of a submitit training job, in every task (= rank): ``srdd train``, then the requeue.

    submitit signals every task with USR2 before the time limit; the harness's stop handler
    (installed over submitit's own) checkpoints at a step boundary and leaves REQUEUE. Rank 0 then
    requeues the job and leaves without a result, so submitit keeps waiting for the restarted job,
    which loads the same submission and resumes.
    """
    os.environ["SRDD_HOME"] = srdd_home
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import submitit

    if "RANK" not in os.environ:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    from pretrain.cli import setup_logging
    from pretrain.train.loop import main

    setup_logging()  # the job's stderr gets the same log lines as `srdd train`

    cfg = load_config(overrides=overrides)
    main(cfg, argparse.Namespace())
    requeue = run_dir(cfg) / REQUEUE_FILE
    if int(os.environ["RANK"]) == 0 and requeue.exists():  # rank 0 wrote it before main returned
        requeue.unlink()
        job_id = submitit.JobEnvironment().job_id
        log.warning("%s checkpointed on a stop request; requeueing job %s", cfg.run_name, job_id)
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
        raise SystemExit(0)  # not an Exception: submitit writes no result, the job is not over
    return {"run": cfg.run_name, "status": run_status(run_dir(cfg), cfg)}


# ---- waiting ------------------------------------------------------------------------------------
def wait_runs(jobs: Sequence[RunJob], timeout_s: float, poll_s: float = 2.0, queue: Sequence[SRDDConfig] = (),
              slots: int = 1, env: dict[str, str] | None = None) -> dict[str, str]:
    """Block until every job has ended, starting the ``queue`` of local runs as they go (at most
    ``slots`` of them running at once, with ``env``); return ``{run_name: run_status}``. A run that
    did not complete is logged with its job's state and log. TimeoutError names the unfinished jobs."""
    deadline = time.monotonic() + timeout_s
    pending, queue, started = list(jobs), list(queue), []
    while pending or queue:
        while queue and sum(job.launcher == "local" for job in pending) < slots:
            started.append(submit_run(queue.pop(0), "local", env=env))
            pending.append(started[-1])
        pending = [job for job in pending if not job.done()]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} training run(s) unfinished after {timeout_s:.0f} s: " +
                               ", ".join(job.describe() for job in pending))
        if pending:
            time.sleep(poll_s)
    statuses = {}
    for job in [*jobs, *started]:
        statuses[job.cfg.run_name] = status = run_status(job.run, job.cfg)
        if status != COMPLETED:
            log.error("run %s is %s: %s", job.cfg.run_name, status, job.describe())
    return statuses


def train_runs(cfgs: Sequence[SRDDConfig], timeout_s: float, launcher: str | None = None,
               poll_s: float = 2.0, local_jobs: int = 1) -> dict[str, str]:
    """Bring every run of cfgs to completion: completed runs are skipped, the others submitted
    (continued from their checkpoints). Cluster runs are all submitted at once; local runs share
    this machine: one after another by default, else ``local_jobs`` at a time, the most expensive
    (depth^3 x steps) first so that they end together, each with OMP_NUM_THREADS = cores /
    local_jobs unless the environment sets it. Returns ``{run_name: run_status}`` of every run."""
    from pretrain.sizes import SIZES
    from pretrain.train.budget import tokens_per_sample, total_steps

    def cost(cfg: SRDDConfig) -> float:
        return SIZES[cfg.model.size].depth ** 3 * total_steps(cfg.train, tokens_per_sample(cfg.tokenizer.patch_nums))

    todo = [cfg for cfg in cfgs if run_status(run_dir(cfg), cfg) != COMPLETED]
    on_cluster = [submit_run(cfg, launcher) for cfg in todo if resolve_launcher(cfg, launcher) != "local"]
    local = [cfg for cfg in todo if resolve_launcher(cfg, launcher) == "local"]
    env = None
    if local_jobs > 1:
        local.sort(key=cost, reverse=True)
        env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // local_jobs))}
    wait_runs(on_cluster, timeout_s, poll_s, queue=local, slots=max(1, local_jobs), env=env)
    return {cfg.run_name: run_status(run_dir(cfg), cfg) for cfg in cfgs}


__all__ = ["COMPLETED", "FAILED", "INCOMPLETE", "STALE", "RunJob", "config_overrides", "resolve_launcher", "run_status", "submit_run",
           "train_job", "train_runs", "wait_runs"]
