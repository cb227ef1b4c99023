"""Shared fixtures. Each plugin module is owned by one area; star-imports register its fixtures."""
from __future__ import annotations

import os

# Before torch is imported anywhere: one thread per process on the 2-core CI box.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402

from tests.plugins.artifacts import *  # noqa: F401,F403,E402  (MNIST shards, pyramid shards: data area)
from tests.plugins.slurm_cluster import *  # noqa: F401,F403,E402  (the local SLURM cluster: slurm area)
from tests.plugins.tokenizer_artifacts import *  # noqa: F401,F403,E402  (tiny tokenizer checkpoint: tokenizer area)
from tests.plugins.training_runs import *  # noqa: F401,F403,E402  (the shared 2-rank train run: train area)


@pytest.fixture(autouse=True)
def srdd_home(tmp_path, monkeypatch):
    """Every test writes its outputs under its own SRDD_HOME."""
    home = tmp_path / "srdd_home"
    monkeypatch.setenv("SRDD_HOME", str(home))
    return home
