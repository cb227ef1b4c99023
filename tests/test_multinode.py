"""More than one node, and resuming on another number of ranks (docs/slurm.md "Several nodes",
docs/training.md "Elastic resume").

On the local cluster restarted with two nodes (two slurmd on this host): `sbatch --nodes=2
slurm/train_size.sh d1 ...` (2 nodes x 2 gloo ranks, ZeRO-3) against the same job on 1 node x 4
ranks, and a preemption of it requeued onto one node. ZeRO-2 and ZeRO-3 runs resumed 2x2 -> 1x2 ->
1x1 -> 1x2 compare the gathered weights and Adam moments right after each resume with those saved.
Every run has ``train.debug_record`` (samples per rank, gathered optimizer state) and no class
dropout (``model.cond_drop=0``): with it, runs on different numbers of ranks differ by float
summation order only, which the tolerance below bounds.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from data_pipeline.files import index_tar
from data_pipeline.stream import split_shards
from pretrain.outputs import read_jsonl
from slurm.cluster import FINAL_STATES
from tests.plugins.slurm_cluster import release_requeued, wait_for
from tests.plugins.training_runs import gathered_states, records, run_srdd, taken_samples, train_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS, BATCH, EPOCH = 20, 16, 300  # 20 steps of the global batch cover the 300 training samples once (+20)
# Losses of a run resumed on another number of ranks vs the uninterrupted one: they differ by the
# order in which floats are summed (per-rank micro-batch sums, all-reduce over other ranks), measured
# at most 2e-9 relative on these runs; a real fault is far larger (DeepSpeed's ZeRO-3 universal load
# sharing one Adam step counter between parameter groups left the final loss 7e-3 off).
LOSS_REL_TOL = 1e-6


def run_args(pyramid_shards: Path, tokenizer: Path, zero_stage: int, run_name: str, *extra: str) -> list[str]:
    return [*train_overrides(pyramid_shards, tokenizer), f"train.batch_size={BATCH}", f"train.max_steps={STEPS}",
            f"train.zero_stage={zero_stage}", "train.val_every=0", "train.ckpt_every=10", "train.debug_record=true",
            "model.cond_drop=0", "train.export_model=true", f"run_name={run_name}", *extra]


def job_env(home: Path) -> dict[str, str]:
    return {"SRDD_HOME": str(home), "SRDD_PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore::FutureWarning"}


def losses(run: Path) -> list[float]:
    return [r["loss"] for _, r in sorted(records(run, "train").items())]


def global_positions(n: int) -> list[tuple[int, int]]:
    """(epoch, index) of the first n samples of the global order (no sample of the split is damaged)."""
    return [(g // EPOCH, g % EPOCH) for g in range(n)]


def assert_state_carried_over(run: Path, step: int, world_size: int) -> None:
    """Weights, both Adam moments (full tensors, gathered from any partitioning), step counts,
    parameter-group hyper-parameters and the lr-scheduler position equal, bit for bit, after
    ``world_size`` ranks resumed from ``step`` to what the saving ranks held."""
    saved, resumed = gathered_states(run, step, world_size)
    s, r = saved["model"], resumed["model"]
    assert s["params"].keys() == r["params"].keys() and len(s["params"]) > 10
    for name, tensors in s["params"].items():
        assert tensors.keys() == {"fp32", "exp_avg", "exp_avg_sq"}
        for key, value in tensors.items():
            assert torch.equal(value, r["params"][name][key]), (step, world_size, name, key)
    assert float(s["params"]["head.weight"]["exp_avg_sq"].abs().sum()) > 0  # moments were really there
    assert s["steps"] == r["steps"] == [float(step)] * len(s["steps"]) and len(s["steps"]) >= 2
    assert s["groups"] == r["groups"] and [g["weight_decay"] for g in s["groups"]] == [0.05, 0.0]
    assert s["scheduler_last_epoch"] == r["scheduler_last_epoch"] == step


def assert_no_sample_repeated_or_skipped(run: Path, steps: int) -> None:
    taken = taken_samples(run)
    assert [(e, i) for e, i, _ in taken] == global_positions(steps * BATCH)


@pytest.fixture(scope="module")
def two_by_two(two_node_cluster, tmp_path_factory, pyramid_shards, tiny_tokenizer_ckpt) -> tuple[Path, str]:
    """An uninterrupted `sbatch --nodes=2 slurm/train_size.sh d1 ...` (ZeRO-3): (run dir, job log)."""
    home = tmp_path_factory.mktemp("two_by_two")
    log = home / "job.out"
    job = two_node_cluster.sbatch("slurm/train_size.sh", "d1", *run_args(pyramid_shards, tiny_tokenizer_ckpt, 3, "2x2"),
                                  sbatch_args=["--nodes=2", f"--output={log}"], env=job_env(home), timeout_s=600,
                                  check=False)
    assert two_node_cluster.job_state(job) == "COMPLETED", log.read_text()[-4000:]
    return home / "2x2", log.read_text()


def test_two_node_job_global_ranks_sample_coverage_and_outputs_written_once(two_by_two, pyramid_shards):
    run, log = two_by_two
    assert "on 2 node(s) x 2 ranks" in log
    first = {r["rank"]: r for r in (read_jsonl(p)[0] for p in (run / "debug").glob("samples_rank*.jsonl"))}
    assert sorted(first) == [0, 1, 2, 3] and {r["world_size"] for r in first.values()} == {4}
    by_node: dict[str, list[int]] = {}
    for r in first.values():
        by_node.setdefault(r["node"], []).append(r["local_rank"])
    assert sorted(by_node) == ["node1", "node2"] and all(sorted(v) == [0, 1] for v in by_node.values())

    # Global batch s = samples (s-1)*16 .. s*16-1 of the global order, rank r taking 4 of them.
    assert_no_sample_repeated_or_skipped(run, STEPS)
    keys = {key for shard in split_shards(pyramid_shards, "train") for key, _ in index_tar(shard, [])}
    epoch0 = [key for e, _, key in taken_samples(run) if e == 0]
    assert len(keys) == EPOCH and sorted(epoch0) == sorted(keys)  # every sample of the epoch exactly once

    for step in (10, STEPS):  # one writer per checkpoint and for model.pt (rank 0, not each node's first rank)
        ckpt = run / "checkpoints" / f"step_{step:08d}"
        assert log.count(f"checkpoint {ckpt} written by 4 ranks") == 1
        assert sorted(p.name for p in ckpt.glob("rank_*.pt")) == [f"rank_{r:05d}.pt" for r in range(4)]
        assert len(list((ckpt / "ds").glob("*optim_states.pt"))) == 4
    assert log.count(f"writing {run / 'model.pt'}") == 1
    assert torch.load(run / "model.pt", weights_only=True)["step"] == STEPS
    assert len(losses(run)) == STEPS


def test_one_node_with_four_ranks_gives_the_same_losses(two_by_two, tmp_path, pyramid_shards, tiny_tokenizer_ckpt):
    run, _ = two_by_two
    run_srdd(tmp_path, "train", run_args(pyramid_shards, tiny_tokenizer_ckpt, 3, "1x4"), ranks=4)
    assert losses(tmp_path / "1x4") == losses(run)
    assert taken_samples(tmp_path / "1x4") == taken_samples(run)


@pytest.fixture(scope="module")
def requeued_onto_one_node(two_node_cluster, tmp_path_factory, pyramid_shards, tiny_tokenizer_ckpt) -> tuple[Path, str]:
    """The two-node job preempted (SIGTERM) after a few steps and requeued onto one node."""
    home = tmp_path_factory.mktemp("requeued")
    log = home / "job.out"
    run = home / "requeued"
    job = two_node_cluster.sbatch("slurm/train_size.sh", "d1",
                                  *run_args(pyramid_shards, tiny_tokenizer_ckpt, 3, "requeued"),
                                  sbatch_args=["--nodes=2", f"--output={log}"], env=job_env(home), wait=False)

    def started() -> bool:
        state = two_node_cluster.job_state(job)
        assert state not in FINAL_STATES, f"job {job} is {state}: {log.read_text()[-3000:] if log.exists() else ''}"
        return len(read_jsonl(run / "metrics.jsonl")) >= 2

    wait_for(started, 300, "the first training steps", poll_s=0.1)
    subprocess.run(["scancel", "--batch", "--signal=TERM", job], check=True, env=two_node_cluster.full_env())
    release_requeued(two_node_cluster, job, nodes=1)
    assert two_node_cluster.wait(job, timeout_s=300) == "COMPLETED", log.read_text()[-4000:]
    return run, log.read_text()


def test_preempted_two_node_job_requeued_onto_one_node_ends_at_the_same_loss(requeued_onto_one_node, two_by_two):
    run, log = requeued_onto_one_node
    assert "restart 0: requeued on 2 node(s) x 2 ranks" in log and "restart 1: requeued on 1 node(s) x 2 ranks" in log
    preempt = int(re.search(r"preempted at step (\d+)/20", log).group(1))
    assert 2 <= preempt < STEPS
    assert f"resumed step_{preempt:08d}, written by 4 ranks, on 2 ranks" in log
    assert_state_carried_over(run, preempt, world_size=2)
    assert sorted(records(run, "train")) == list(range(1, STEPS + 1))  # every step logged once
    assert_no_sample_repeated_or_skipped(run, STEPS)
    reference = losses(two_by_two[0])
    assert losses(run)[:preempt] == reference[:preempt]
    assert losses(run)[-1] == pytest.approx(reference[-1], rel=LOSS_REL_TOL)
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "completed" and final["val_loss"] == pytest.approx(
        json.loads((two_by_two[0] / "final.json").read_text())["val_loss"], rel=LOSS_REL_TOL)


def _resume(home: Path, run_name: str, pyramid_shards: Path, tokenizer: Path, zero_stage: int, ranks: int,
            *extra: str) -> None:
    run_srdd(home, "train", run_args(pyramid_shards, tokenizer, zero_stage, run_name, *extra), ranks=ranks)


def test_zero3_resumes_on_one_rank_and_back_on_two(requeued_onto_one_node, tmp_path, pyramid_shards,
                                                   tiny_tokenizer_ckpt):
    """The requeued run (2x2 -> 1x2, checked above) continued 1x2 -> 1x1 -> 1x2 with a longer budget."""
    run = tmp_path / "requeued"
    shutil.copytree(requeued_onto_one_node[0], run)
    _resume(tmp_path, "requeued", pyramid_shards, tiny_tokenizer_ckpt, 3, 1, f"train.max_steps={STEPS + 4}")
    assert_state_carried_over(run, STEPS, world_size=1)
    _resume(tmp_path, "requeued", pyramid_shards, tiny_tokenizer_ckpt, 3, 2, f"train.max_steps={STEPS + 8}")
    assert_state_carried_over(run, STEPS + 4, world_size=2)
    assert_no_sample_repeated_or_skipped(run, STEPS + 8)


def test_zero2_resumes_2x2_1x2_1x1_and_back(two_by_two, tmp_path, pyramid_shards, tiny_tokenizer_ckpt):
    """One ZeRO-2 run in four jobs of 4, 2, 1 and 2 ranks (5 steps each): the state carried over
    exactly at every change, the samples continuing, and the losses those of the ZeRO-3 2x2 job.
    A record every 2 steps: the stops at steps 5 and 15 fall inside a window, whose per-rank loss
    sums the resized ranks take over (4 -> 2 and 1 -> 2 ranks)."""
    run = tmp_path / "z2"
    for ranks, stop_after in ((4, 5), (2, 5), (1, 5), (2, 0)):
        _resume(tmp_path, "z2", pyramid_shards, tiny_tokenizer_ckpt, 2, ranks, f"train.stop_after={stop_after}",
                "train.log_every=2")
    for step, world_size in ((5, 2), (10, 1), (15, 2)):
        assert_state_carried_over(run, step, world_size)
    assert_no_sample_repeated_or_skipped(run, STEPS)
    reference = losses(two_by_two[0])  # one per step
    windows = {step: r["loss"] for step, r in records(run, "train").items()}
    assert sorted(windows) == list(range(2, STEPS + 1, 2))
    for step, loss in windows.items():  # equal tokens per step: a window's loss is the mean of its steps'
        assert loss == pytest.approx((reference[step - 2] + reference[step - 1]) / 2, rel=LOSS_REL_TOL), step
