"""slurm/train_size.sh on the local SLURM cluster (signal -> checkpoint -> requeue -> resume) and
the submitit sweep writing the runs table."""
from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from pretrain.config.fields import ConfigError
from pretrain.outputs import read_jsonl
from slurm.cluster import FINAL_STATES
from tests.plugins.slurm_cluster import release_requeued, wait_for


def _overrides(pyramid_shards: Path, tiny_tokenizer_ckpt: Path) -> list[str]:
    return [f"tokenizer.ckpt={tiny_tokenizer_ckpt}", f"data.pyramids_dir={pyramid_shards}", "train.batch_size=8",
            "train.val_batches=2", "train.num_workers=0", "train.wandb=disabled", "train.lr_peak=3e-3"]


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_train_size_survives_sigterm_by_checkpoint_and_requeue(slurm_cluster, srdd_home, pyramid_shards,
                                                                    tiny_tokenizer_ckpt):
    srdd_home.mkdir(parents=True, exist_ok=True)
    log = srdd_home / "train_size.out"
    args = [*_overrides(pyramid_shards, tiny_tokenizer_ckpt), "train.max_steps=150", "train.log_every=1",
            "train.val_every=0", "train.ckpt_every=1000"]
    job = slurm_cluster.sbatch("slurm/train_size.sh", "d1", *args, sbatch_args=[f"--output={log}"], wait=False,
                               env={"PYTHONWARNINGS": "ignore::FutureWarning"})
    run = srdd_home / "d1"  # run_name defaults to the size

    def started() -> bool:
        state = slurm_cluster.job_state(job)
        assert state not in FINAL_STATES, f"job {job} is {state}: {log.read_text()[-3000:] if log.exists() else ''}"
        return len(read_jsonl(run / "metrics.jsonl")) >= 3

    wait_for(started, 240, "the first training steps")
    subprocess.run(["scancel", "--batch", "--signal=TERM", job], check=True, env=slurm_cluster.full_env())
    release_requeued(slurm_cluster, job)
    assert slurm_cluster.wait(job, timeout_s=240) == "COMPLETED", log.read_text()[-3000:]

    text = log.read_text()
    assert "got TERM" in text and f"requeueing job {job}" in text and "restart 1" in text
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 151))  # every step logged once across the two job runs
    preempt_step = int(re.search(r"preempted at step (\d+)/150", text).group(1))
    assert 3 <= preempt_step < 150
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == [f"step_{preempt_step:08d}", "step_00000150"]
    assert json.loads((run / "final.json").read_text())["status"] == "completed"
    assert not (run / "PREEMPT").exists() and not (run / "REQUEUE").exists()


def test_isoflop_grid_gives_tokens_from_flops_per_token():
    from slurm.sweep import grid, train_flops_per_token
    from slurm.launch import size_config

    cfgs = grid("iso", ["d1", "d2"], ["var", "srdd"], [], [1e12], [])
    assert [c.run_name.split("/")[1].rsplit("-", 1)[0] for c in cfgs] == ["d1-var", "d1-srdd", "d2-var", "d2-srdd"]
    for c in cfgs:
        per_token = train_flops_per_token(size_config(c.model.size, [f"model.mask={c.model.mask}"]))
        assert c.train.tokens == int(1e12 / per_token)
    assert cfgs[2].train.tokens < cfgs[0].train.tokens  # a bigger model gets fewer tokens at equal compute
    # a budget below ~10 optimizer steps of a size: whole steps would overshoot it, refused with the numbers
    d2_step = 64 * 130 * train_flops_per_token(size_config("d2", []))  # train.batch_size x L tokens
    with pytest.raises(ConfigError, match=r"--flops 1e\+10: d2 trains in whole steps of 8320 tokens .* spend 3\.\d\dx"):
        grid("iso", ["d2"], ["var"], [], [1e10], [])
    assert grid("iso", ["d2"], ["var"], [], [10.5 * d2_step], [])  # 11 whole steps: 4.8% over the budget


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_on_slurm_writes_runs_table(slurm_cluster, srdd_home, pyramid_shards, tiny_tokenizer_ckpt, monkeypatch):
    """Two submitit jobs of 2 gloo ranks each (the node has 2 CPUs: they run one after the other)."""
    from slurm.sweep import main

    slurm_cluster.activate(monkeypatch)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning")
    rc = main(["--name", "sw", "--sizes", "d1", "--masks", "var", "srdd", "--tokens", "3000",
               *_overrides(pyramid_shards, tiny_tokenizer_ckpt), "slurm.enabled=true", "slurm.ranks_per_node=2",
               "slurm.cpus_per_task=1", "train.log_every=1", "train.val_every=0"])
    assert rc == 0
    with open(srdd_home / "sw" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["d1-var-3e03", "d1-srdd-3e03"]
    header = list(rows[0])
    assert header[:9] == ["run", "size", "mask", "params", "non_embedding_params", "tokens", "flops",
                          "train_loss", "val_loss"]
    assert header[9:16] == [f"val_loss_s{k}" for k in range(6)] + ["status"]
    for row, mask in zip(rows, ["var", "srdd"]):
        assert row["status"] == "completed" and row["mask"] == mask and row["size"] == "d1"
        assert int(row["tokens"]) == 3 * 8 * 130  # ceil(3000 / (8 * 130)) steps
        assert float(row["val_loss"]) > 0 and float(row["flops"]) > 0
    assert float(rows[1]["flops"]) < float(rows[0]["flops"])  # the Markov mask attends to fewer keys
