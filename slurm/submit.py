"""submitit plumbing shared by everything that submits Python functions (training runs through
slurm/runs.py, the pyramid precompute array, the ablation grid's scoring array).

    executor = make_executor(cfg, "pyramids", folder, tasks_per_node=1)
    jobs = executor.map_array(encode_shard, shard_ids)       # a SLURM job array
    results = wait_all(jobs, timeout_s=3600)                  # raises JobsFailedError naming the dead

Resources come from `cfg.slurm` (pretrain/config/slurm.py); keyword overrides are submitit AutoExecutor
parameters and win. On the local cluster there is no slurmdbd: submitit polls `sacct`, which
resolves to the stand-in in slurm/bin/ (make_executor puts it on PATH), so a killed job is
reported CANCELLED instead of leaving submitit waiting forever.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import submitit

from pretrain.config import SRDDConfig
from slurm.cluster import SlurmError, with_standin_path

# Wall time when neither cfg.slurm.time_min nor an override sets one (the size table's own default).
DEFAULT_TIME_MIN = 60
# Results are read once a job's state is one of these (submitit's local executor says FINISHED).
_SUCCESS_STATES = frozenset({"COMPLETED", "FINISHED"})


class JobsFailedError(SlurmError):
    """Some submitit jobs failed or died; `.failures` maps job id -> one-line reason."""

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


def executor_parameters(cfg: SRDDConfig, name: str) -> dict[str, Any]:
    """AutoExecutor parameters from cfg.slurm.

    gpus_per_node = 0 means CPU ranks: the job gets `ranks_per_node` tasks per node (gloo);
    with GPUs it gets one task per GPU. Table defaults (nodes 0, gpus -1, time 0) fall back to
    1 node, CPU ranks and DEFAULT_TIME_MIN unless the caller passes the size table's values.
    """
    s = cfg.slurm
    gpus = max(s.gpus_per_node, 0)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": s.time_min or DEFAULT_TIME_MIN,
        "nodes": s.nodes or 1,
        "gpus_per_node": gpus,
        "tasks_per_node": gpus if gpus > 0 else s.ranks_per_node,
        "cpus_per_task": s.cpus_per_task,
        "slurm_array_parallelism": s.array_parallelism,
        # SIGUSR2 to every task this long before the limit: a training run checkpoints and requeues
        # (slurm/runs.py); other jobs get submitit's own handler.
        "slurm_signal_delay_s": s.signal_s,
    }
    for key in ("partition", "account", "qos"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    return params


def make_executor(cfg: SRDDConfig, name: str, folder: Path, cluster: str | None = None,
                  **overrides: Any) -> submitit.AutoExecutor:
    """A submitit executor writing its pickles and logs under `folder` (`%j` is allowed in it).

    cluster: "slurm" (default when cfg.slurm.enabled), "local" (subprocesses on this machine,
    the default otherwise) or "debug" (in this process). overrides: AutoExecutor parameters,
    e.g. tasks_per_node=1 for an array of single-process tasks, timeout_min=size.time_min.
    """
    cluster = cluster or ("slurm" if cfg.slurm.enabled else "local")
    if cluster == "slurm":
        # submitit's state watcher runs `sacct` from this process's PATH.
        os.environ["PATH"] = with_standin_path(os.environ.get("PATH", ""))
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = executor_parameters(cfg, name)
    params.update(overrides)
    executor.update_parameters(**params)
    return executor


def _describe(job: submitit.Job, reason: str) -> str:
    return f"job {job.job_id}: {reason} (stdout {job.paths.stdout}, stderr {job.paths.stderr})"


def job_state(job: submitit.Job) -> str:
    """submitit's state of a job, cut to its base word ("CANCELLED by 0" -> CANCELLED)."""
    return job.state.split()[0].upper()


def job_succeeded(job: submitit.Job) -> bool:
    return job_state(job) in _SUCCESS_STATES


def _collect(job: submitit.Job, results: dict[str, Any], failures: dict[str, str]) -> None:
    """Result or failure reason of a finished job. A job that died (cancelled, timed out, killed)
    never wrote a result pickle: report its state instead of letting submitit wait for the file."""
    if not job_succeeded(job) and not job.paths.result_pickle.exists():
        failures[job.job_id] = _describe(job, job_state(job))
        return
    try:
        results[job.job_id] = job.result()
    except Exception as err:  # noqa: BLE001 - the job's own exception, reported with its log paths
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        failures[job.job_id] = _describe(job, f"{job_state(job)}: {first_line}")


def wait_all(jobs: Sequence[submitit.Job], timeout_s: float, poll_s: float = 2.0) -> list[Any]:
    """Results of all jobs, in order. Raises JobsFailedError naming every failed job and its log
    paths once all are final, or TimeoutError naming the unfinished ones after timeout_s."""
    deadline = time.monotonic() + timeout_s
    pending = list(jobs)
    while pending:
        # One forced state query covers every registered job (submitit batches them per sacct call).
        pending[0].done(force_check=True)
        pending = [job for job in pending if not job.done()]
        if not pending:
            break
        if time.monotonic() > deadline:
            names = ", ".join(f"{j.job_id} ({j.state})" for j in pending)
            raise TimeoutError(f"{len(pending)} job(s) unfinished after {timeout_s:.0f} s: {names}")
        time.sleep(poll_s)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for job in jobs:
        _collect(job, results, failures)
    if failures:
        raise JobsFailedError(f"{len(failures)} of {len(jobs)} job(s) failed:\n  " +
                              "\n  ".join(failures.values()), failures)
    return [results[job.job_id] for job in jobs]


__all__ = ["DEFAULT_TIME_MIN", "JobsFailedError", "executor_parameters", "make_executor", "wait_all"]
