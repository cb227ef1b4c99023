"""Session fixture for the local SLURM cluster (slurm/local_cluster.sh; area: slurm).

    def test_x(slurm_cluster, tmp_path):
        job_id = slurm_cluster.sbatch("slurm/precompute_pyramids.sh", sbatch_args=["--array=0-1"],
                                      env={"SOME": "value"}, timeout_s=300)   # waits, raises if failed
        slurm_cluster.job_state(job_id)   # "COMPLETED"
        slurm_cluster.activate(monkeypatch)  # SLURM_CONF + sacct stand-in in os.environ (submitit)

Attributes: .conf (Path of slurm.conf), .env (SLURM_CONF and PATH for subprocesses), .logs_dir.
The cluster is started once (or reused if already up) and left running for later sessions.
"""
from __future__ import annotations

import os
import shutil

import pytest

from slurm.cluster import LocalCluster, SlurmError

__all__ = ["slurm_cluster"]


def _cannot_run_reason() -> str | None:
    """Why SLURM cannot run here at all, or None. Only a missing install without root to fix it counts."""
    installed = all(shutil.which(b) or os.path.exists(f"/usr/sbin/{b}") for b in ("slurmctld", "slurmd", "sbatch"))
    if installed or os.geteuid() == 0:
        return None
    return "SLURM (slurmctld/slurmd/slurm-client) is not installed and installing it with apt needs root"


@pytest.fixture(scope="session")
def slurm_cluster() -> LocalCluster:
    reason = _cannot_run_reason()
    if reason:
        pytest.skip(reason)
    try:
        return LocalCluster.start()
    except SlurmError as err:
        if "apt-get" in str(err) and "Could not resolve" in str(err):
            pytest.skip(f"SLURM is not installed and apt cannot reach its mirrors: {err}")
        raise
