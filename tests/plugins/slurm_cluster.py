"""Session fixture for the local SLURM cluster (slurm/local_cluster.sh; area: slurm).

    def test_x(slurm_cluster, tmp_path):
        job_id = slurm_cluster.sbatch("slurm/precompute_pyramids.sh", sbatch_args=["--array=0-1"],
                                      env={"SOME": "value"}, timeout_s=300)   # waits, raises if failed
        slurm_cluster.job_state(job_id)   # "COMPLETED"
        slurm_cluster.activate(monkeypatch)  # SLURM_CONF + sacct stand-in in os.environ (submitit)
        release_requeued(slurm_cluster, job_id)  # after a requeue: let the job start again now
        release_requeued(slurm_cluster, job_id, nodes=1)  # ... on one node (a requeue onto fewer nodes)

    def test_y(two_node_cluster): ...   # module fixture: the cluster with nodes node1, node2

Also ``wait_for(predicate, timeout_s, what)``: poll until predicate() is truthy, return its value.

Attributes: .conf (Path of slurm.conf), .env (SLURM_CONF and PATH for subprocesses), .logs_dir.
The cluster is started once (or reused if already up) and left running for later sessions.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
import shutil
from typing import Iterator

import pytest

from slurm.cluster import SCRIPT, LocalCluster, SlurmError

__all__ = ["release_requeued", "slurm_cluster", "two_node_cluster", "wait_for"]


def _cannot_run_reason() -> str | None:
    """Why SLURM cannot run here at all, or None. Only a missing install without root to fix it counts."""
    installed = all(shutil.which(b) or os.path.exists(f"/usr/sbin/{b}") for b in ("slurmctld", "slurmd", "sbatch"))
    if installed or os.geteuid() == 0:
        return None
    return "SLURM (slurmctld/slurmd/slurm-client) is not installed and installing it with apt needs root"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalCluster]:
    """The local cluster for the whole session; stopped at the end when this session started it (a
    cluster the user had running stays up; one left behind would hold the ports of the next run)."""
    reason = _cannot_run_reason()
    if reason:
        pytest.skip(reason)
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    try:
        cluster = LocalCluster.start()
    except SlurmError as err:
        if "apt-get" in str(err) and "Could not resolve" in str(err):
            pytest.skip(f"SLURM is not installed and apt cannot reach its mirrors: {err}")
        raise
    yield cluster
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def two_node_cluster(slurm_cluster) -> Iterator[LocalCluster]:
    """The local cluster restarted with two nodes (node1, node2: two slurmd on this host) for one
    test module; the one-node cluster the other tests expect is started again afterwards."""
    cluster = LocalCluster.start(nodes=2)
    yield cluster
    LocalCluster.start(nodes=1)


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    """predicate()'s first truthy value, polled every poll_s; AssertionError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def release_requeued(cluster: LocalCluster, job_id: str, timeout_s: float = 120, nodes: int | None = None) -> None:
    """Wait until the job is requeued (pending, Restarts=1), then make it eligible at once, with
    ``nodes`` nodes when given (what a site does when a requeued job gets a smaller allocation).

    SLURM keeps a requeued job ineligible for ~2 minutes (BeginTime). Not at once: slurmd revokes
    the first run's credential, and refuses any credential of this job created in the same second
    ("Job credential revoked", the job FAILS), so the clock must pass that second first.
    """
    def show() -> str:
        return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                              env=cluster.full_env()).stdout

    text = wait_for(lambda: re.search(r"Restarts=1\b", text := show()) and "JobState=PENDING" in text and text,
                    timeout_s, f"the requeue of job {job_id}")
    if nodes is not None:  # one task per node (train_size.sh): SLURM keeps the task and CPU counts unless told
        cpus = nodes * int(re.search(r"CPUs/Task=(\d+)", text).group(1))
        subprocess.run(["scontrol", "update", f"jobid={job_id}", f"NumTasks={nodes}", f"NumNodes={nodes}-{nodes}",
                        f"NumCPUs={cpus}"], check=True, env=cluster.full_env(), capture_output=True)
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, env=cluster.full_env(),
                   capture_output=True)
