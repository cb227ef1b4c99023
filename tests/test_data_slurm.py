"""Pyramid precompute on the local SLURM cluster: the sbatch array and the submitit array both
produce exactly the shards and manifests of a local run."""
from __future__ import annotations

import pytest

from pretrain.cli import main as cli_main
from tests.test_data_pyramids import tree_bytes

pytestmark = pytest.mark.slurm


def test_sbatch_array_equals_local_run(slurm_cluster, mnist_shards, pyramid_shards, tiny_tokenizer_ckpt, tmp_path):
    out = tmp_path / "pyr"
    job = slurm_cluster.sbatch("slurm/precompute_pyramids.sh", str(mnist_shards), str(tiny_tokenizer_ckpt), str(out),
                               "data.num_workers=1", sbatch_args=["--array=0-1", "--cpus-per-task=1"],
                               env={"OMP_NUM_THREADS": "1"}, timeout_s=300)
    assert set(slurm_cluster.task_states(job).values()) == {"COMPLETED"}
    assert tree_bytes(out) == tree_bytes(pyramid_shards)


def test_submitit_array_equals_local_run(slurm_cluster, monkeypatch, mnist_shards, pyramid_shards, tiny_tokenizer_ckpt,
                                         tmp_path):
    slurm_cluster.activate(monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "pyr"
    assert cli_main(["pyramids", "--shards", str(mnist_shards), "--tokenizer", str(tiny_tokenizer_ckpt), "--out", str(out),
                     "slurm.enabled=true", "slurm.array_tasks=2", "slurm.cpus_per_task=1", "data.num_workers=0",
                     f"slurm.log_dir={tmp_path / 'logs'}"]) == 0
    assert tree_bytes(out) == tree_bytes(pyramid_shards)
    assert list((tmp_path / "logs").rglob("*_log.out")), "the tasks ran as submitit SLURM jobs"
