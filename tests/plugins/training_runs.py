"""Training stages run as real processes (train area): launch, interrupt, read back; and the shared
2-rank `srdd train` run.

    run_srdd(home, "train", [...], ranks=2)              # waits; raises with the log tail on failure
    proc = start_srdd(home, "tokenizer-train", [...], ranks=2, log=path)
    kill_when(proc, lambda: last_step(run, "train") >= 3)  # SIGKILL the launcher and every rank
    records(run, "train")                                  # step -> record, the last of each step winning
    taken_samples(run)             # with train.debug_record: [epoch, index, key] in global order, all jobs
    gathered_states(run, step, w)  # ... (saved, resumed on w ranks) weights + Adam state at a checkpoint

``straight_train_run`` (session): d1, 2 gloo ranks, ZeRO-2, 8 steps, val every 4, checkpoints every
4, a snapshot at step 4, wandb offline: the uninterrupted reference of every 2-rank `srdd train` resume test, and the
teacher / policy source of the other stages' tests.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from pretrain.outputs import read_jsonl

__all__ = ["single_rank", "straight_train_run"]

REPO = Path(__file__).resolve().parents[2]


def srdd_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SRDD_HOME": str(home), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "PYTHONWARNINGS": "ignore::FutureWarning", **extra}


def srdd_cmd(stage: str, args: list[str], ranks: int = 1, module: str = "pretrain.cli") -> list[str]:
    """``python -m <module> STAGE ARGS``, under torchrun (gloo ranks on CPU) for ranks > 1."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    return [sys.executable, *launcher, "-m", module, stage, *args]


def run_srdd(home: Path, stage: str, args: list[str], ranks: int = 1, check: bool = True, timeout_s: float = 600,
             module: str = "pretrain.cli", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(srdd_cmd(stage, args, ranks, module), capture_output=True, text=True, cwd=REPO,
                          env=srdd_env(home, **(env or {})), timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"srdd {stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def start_srdd(home: Path, stage: str, args: list[str], log: Path, ranks: int = 1, module: str = "pretrain.cli",
               env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(srdd_cmd(stage, args, ranks, module), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env=srdd_env(home, **(env or {})))


def records(run_dir: Path, kind: str) -> dict[int, dict[str, Any]]:
    """step -> record of ``kind`` (the last record of each step winning)."""
    return {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == kind}


def last_step(run_dir: Path, kind: str) -> int:
    return max(records(run_dir, kind), default=0)


def ranks_of(proc: subprocess.Popen) -> list[psutil.Process]:
    """The processes that run the stage: the launcher's children under torchrun, else itself."""
    launcher = psutil.Process(proc.pid)
    return launcher.children(recursive=True) or [launcher]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 300) -> bool:
    """SIGKILL ``proc`` and every rank (a node lost) as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            victims = [psutil.Process(proc.pid), *ranks_of(proc)]
            for p in victims:
                p.send_signal(signal.SIGKILL)
            proc.wait()
            psutil.wait_procs(victims, timeout=30)
            return True
        time.sleep(0.005)
    proc.kill()
    raise TimeoutError("training never reached the kill point")


def train_overrides(pyramid_shards: Path, tokenizer: Path) -> list[str]:
    """A d1 `srdd train` on the test pyramids, logging every step."""
    return [f"tokenizer.ckpt={tokenizer}", f"data.pyramids_dir={pyramid_shards}", "model.size=d1",
            "train.batch_size=8", "train.lr_peak=3e-3", "train.warmup_frac=0.1", "train.log_every=1",
            "train.val_batches=2", "train.num_workers=0", "train.wandb=disabled"]


STRAIGHT_TRAIN = ["train.zero_stage=2", "train.max_steps=8", "train.val_every=4", "train.ckpt_every=4",
                  "train.snapshots=[0.5]"]


@pytest.fixture(scope="session")
def straight_train_run(tmp_path_factory, mnist_shards, pyramid_shards, tiny_tokenizer_ckpt) -> Path:
    """The run directory of an uninterrupted 2-rank ZeRO-2 `srdd train` (see the module docstring);
    its config names the image shards, so `srdd eval` finds the val images of its run."""
    home = tmp_path_factory.mktemp("straight_train")
    run_srdd(home, "train", [*train_overrides(pyramid_shards, tiny_tokenizer_ckpt), *STRAIGHT_TRAIN,
                             f"data.shards_dir={mnist_shards}", "run_name=straight", "train.wandb=offline"], ranks=2)
    return home / "straight"


def taken_samples(run_dir: Path) -> list[list[Any]]:
    """[epoch, index, key] of every sample a run's ranks took, in the global order: step, then
    micro-batch, then rank (from ``train.debug_record``'s ``debug/samples_rank*.jsonl``). A step
    logged by several jobs (one killed after it) counts as the latest job logged it."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for path in sorted((run_dir / "debug").glob("samples_rank*.jsonl")):
        for r in read_jsonl(path):
            by_step.setdefault(r["step"], []).append(r)
    out = []
    for step in sorted(by_step):
        latest = max(r["start_step"] for r in by_step[step])
        per_rank: dict[int, list[dict[str, Any]]] = {}
        for r in by_step[step]:
            if r["start_step"] == latest:
                per_rank.setdefault(r["rank"], []).append(r)
        for micro in zip(*(per_rank[rank] for rank in sorted(per_rank))):
            out += [s for r in micro for s in r["samples"]]
    return out


def gathered_states(run_dir: Path, step: int, world_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state saved at ``step``, state right after ``world_size`` ranks resumed from it), per engine:
    ``train.debug_record``'s files (pretrain.train.elastic.gathered_state)."""
    import torch

    debug = run_dir / "debug"
    return (torch.load(debug / f"state_step{step:08d}_saved.pt", weights_only=False),
            torch.load(debug / f"state_step{step:08d}_resumed_w{world_size}.pt", weights_only=False))


@pytest.fixture
def single_rank(monkeypatch):
    """This process as a one-rank gloo group (what ``srdd train`` runs without a launcher)."""
    from pretrain.dist import _free_port, init_distributed

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    return init_distributed()
