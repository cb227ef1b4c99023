"""The one submit function and the one completion check (slurm/runs.py) on real training runs:
local subprocesses here, sbatch and submitit on the local SLURM cluster (marked slurm)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.outputs import read_jsonl, run_dir
from slurm.runs import (COMPLETED, FAILED, INCOMPLETE, STALE, config_overrides, run_status, submit_run, train_runs,
                        wait_runs)
from tests.plugins.slurm_cluster import release_requeued, wait_for


@pytest.fixture
def tiny(pyramid_shards, tiny_tokenizer_ckpt):
    """Config factory: a d1 run on the test pyramids, one rank, constant lr (a longer budget does not
    change the earlier steps), extra overrides last."""
    def make(run_name: str, *overrides: str):
        return load_config(overrides=[
            f"run_name={run_name}", f"tokenizer.ckpt={tiny_tokenizer_ckpt}", f"data.pyramids_dir={pyramid_shards}",
            "model.size=d1", "train.batch_size=8", "train.lr_peak=3e-3", "train.lr_schedule=constant",
            "train.warmup_frac=0", "train.log_every=1", "train.val_every=0", "train.val_batches=2",
            "train.num_workers=0", "train.wandb=disabled", "slurm.ranks_per_node=1", *overrides])
    return make


def _train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]


def test_config_overrides_rebuild_the_config_exactly(tiny):
    from analysis.ablate import cell_config

    cfg = cell_config(tiny("abl", "model.mask=window", "model.attn_window=2", "train.betas=[0.8,0.9]"),
                      "pixel-continuous-absolute")
    cfg.tokenizer.ckpt = "/dir with space/tok.pt"
    cfg.sample.policy_ckpt = "1e3"  # a string that reads back as a float unless quoted
    overrides = config_overrides(cfg)
    assert "pyramid.space=pixel" in overrides and "sample.policy_ckpt='1e3'" in overrides
    assert load_config(overrides=overrides) == cfg
    assert config_overrides(load_config(overrides=["run_name=x"])) == ["run_name=x", "model.size=d2"]
    cfg.run_name = "two\nlines"
    with pytest.raises(ConfigError, match="run_name=.*cannot be passed"):
        config_overrides(cfg)


@pytest.mark.slow
def test_run_status_follows_a_real_run_from_nothing_to_complete_to_stale(tiny, srdd_home):
    """failed (nothing) -> incomplete (checkpoint, no final.json) -> completed -> stale under a
    larger budget -> completed again, continued from its checkpoint; every step trained once."""
    cfg = tiny("life", "train.max_steps=6", "train.ckpt_every=100")
    run = run_dir(cfg)
    assert run_status(run, cfg) == FAILED
    sliced = tiny("life", "train.max_steps=6", "train.ckpt_every=100", "train.stop_after=3")
    assert wait_runs([submit_run(sliced)], timeout_s=300) == {"life": INCOMPLETE}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003"]
    assert train_runs([cfg], timeout_s=300) == {"life": COMPLETED}
    assert json.loads((run / "final.json").read_text())["step"] == 6
    longer = tiny("life", "train.max_steps=9", "train.ckpt_every=100")
    assert (run_status(run, longer), run_status(run)) == (STALE, COMPLETED)
    assert train_runs([longer], timeout_s=300) == {"life": COMPLETED}
    assert json.loads((run / "final.json").read_text())["step"] == 9
    assert _train_steps(run) == list(range(1, 10))


@pytest.mark.slow
def test_local_run_requeues_on_usr1_and_a_kill_before_any_checkpoint_is_failed(tiny, srdd_home):
    """USR1 -> checkpoint at a step boundary + REQUEUE -> the local launcher restarts the run -> it
    resumes: the same losses as an uninterrupted run. A run SIGKILLed before its first checkpoint
    leaves nothing to resume: failed."""
    common = ["train.max_steps=60", "train.ckpt_every=1000"]
    straight = tiny("straight", *common)
    assert train_runs([straight], timeout_s=300) == {"straight": COMPLETED}

    cfg = tiny("preempted", *common)
    job = submit_run(cfg)
    wait_for(lambda: len(_train_steps(run_dir(cfg))) >= 2, 120, "the first training steps")
    os.kill(job.process.pid, signal.SIGUSR1)
    assert wait_runs([job], timeout_s=300) == {"preempted": COMPLETED}
    assert job.restarts == 1
    ckpts = sorted(p.name for p in (run_dir(cfg) / "checkpoints").iterdir())
    assert len(ckpts) == 2 and ckpts[-1] == "step_00000060"  # the preemption's + the last
    assert _train_steps(run_dir(cfg)) == list(range(1, 61))
    assert _train_losses(run_dir(cfg)) == _train_losses(run_dir(straight))
    assert not (run_dir(cfg) / "REQUEUE").exists()

    killed = tiny("killed", *common)
    job = submit_run(killed)
    wait_for(lambda: _train_steps(run_dir(killed)), 120, "the first training step")
    job.process.kill()
    assert wait_runs([job], timeout_s=60) == {"killed": FAILED}
    assert job.state.startswith("FAILED")


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_launcher_trains_the_same_run_as_the_local_one(slurm_cluster, monkeypatch, tiny, srdd_home):
    """submit_run(launcher=sbatch) = sbatch slurm/train_size.sh SIZE <the config as key=value>:
    the same losses as the local launcher's run of the same config, the job's log in the run."""
    slurm_cluster.activate(monkeypatch)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning")
    common = ["train.max_steps=5", "train.ckpt_every=100", "slurm.cpus_per_task=1"]
    local, on_slurm = tiny("local", *common), tiny("sbatch", *common)
    job = submit_run(on_slurm, launcher="sbatch")
    assert train_runs([local], timeout_s=300) == {"local": COMPLETED}
    assert wait_runs([job], timeout_s=300, poll_s=0.5) == {"sbatch": COMPLETED}, job.log_path.read_text()[-3000:]
    assert job.state == "COMPLETED" and job.log_path == run_dir(on_slurm) / f"slurm-{job.job_id}.out"
    log = job.log_path.read_text()
    assert f"[train_size] job {job.job_id} restart 0: sbatch on 1 node(s) x 1 ranks" in log
    assert _train_losses(run_dir(on_slurm)) == _train_losses(run_dir(local))


@pytest.mark.slurm
@pytest.mark.slow
def test_submitit_run_sent_usr2_checkpoints_requeues_and_ends_like_an_uninterrupted_one(
        slurm_cluster, monkeypatch, tiny, srdd_home):
    """submitit signals its jobs with USR2: the run checkpoints at a step boundary, rank 0 requeues
    the job, the restarted job resumes; the final loss equals an uninterrupted (local) run's."""
    slurm_cluster.activate(monkeypatch)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning")
    common = ["train.max_steps=150", "train.ckpt_every=1000", "slurm.cpus_per_task=1", "slurm.enabled=true",
              "slurm.launcher=submitit"]
    cfg = tiny("usr2", *common)
    job = submit_run(cfg)
    run = run_dir(cfg)

    def started() -> bool:
        assert not job.done(), f"job {job.job_id} ended early ({job.state}): {job.job.stderr()}"
        return len(_train_steps(run)) >= 3

    wait_for(started, 240, "the first training steps", poll_s=0.5)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, env=slurm_cluster.full_env())
    release_requeued(slurm_cluster, job.job_id)
    straight = tiny("straight", *common[:-2])  # the same run on this machine, never interrupted
    assert train_runs([straight], timeout_s=300) == {"straight": COMPLETED}
    assert wait_runs([job], timeout_s=300, poll_s=0.5) == {"usr2": COMPLETED}, job.job.stderr()
    assert job.job.result() == {"run": "usr2", "status": COMPLETED}

    preempted = re.search(r"usr2: preempted at step (\d+)/150", job.job.stderr())
    assert preempted, f"no checkpoint on USR2: {job.job.stderr()[-3000:]}"
    preempt_step = int(preempted.group(1))
    assert 3 <= preempt_step < 150
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step_{preempt_step:08d}", "step_00000150"]
    assert _train_steps(run) == list(range(1, 151))
    final, reference = (json.loads((r / "final.json").read_text()) for r in (run, run_dir(straight)))
    assert final["val_loss"] == reference["val_loss"]
    assert _train_losses(run)[-1] == _train_losses(run_dir(straight))[-1]
    assert not (run / "REQUEUE").exists()
