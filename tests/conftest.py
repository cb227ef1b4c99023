"""Shared fixtures. Each plugin module is owned by one area; star-imports register its fixtures."""
from __future__ import annotations

import os

import pytest

from tests.plugins.artifacts import *  # noqa: F401,F403  (MNIST shards, tiny tokenizer, pyramid shards)
from tests.plugins.slurm_cluster import *  # noqa: F401,F403  (the local SLURM cluster)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def srdd_home(tmp_path, monkeypatch):
    """Every test writes its outputs under its own SRDD_HOME."""
    home = tmp_path / "srdd_home"
    monkeypatch.setenv("SRDD_HOME", str(home))
    return home
