"""Outputs layout: where a run's files go, and the resolved config saved next to each output.

Layout (README "Outputs"): ``<SRDD_HOME>/<run_name>/`` holds ``config.yaml``,
``metrics.jsonl``, ``checkpoints/step_XXXXXXXX/`` and ``samples/``. The writes themselves
(atomic temp + rename, JSONL records) are data_pipeline/files.py's, the platform's one I/O
module; they are re-exported here so every stage writes through ``pretrain.outputs``.
"""
from __future__ import annotations

import os
from pathlib import Path

from data_pipeline.files import (append_jsonl, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                 read_jsonl)
from pretrain.config import SRDDConfig, home_dir, to_yaml

__all__ = ["run_dir", "save_config", "append_jsonl", "atomic_path", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "read_jsonl"]


def run_dir(cfg: SRDDConfig) -> Path:
    return home_dir() / cfg.run_name


def save_config(cfg: SRDDConfig, directory: str | os.PathLike) -> Path:
    """Write the resolved config next to an output (``<directory>/config.yaml``)."""
    path = Path(directory) / "config.yaml"
    atomic_write_text(path, to_yaml(cfg))
    return path
