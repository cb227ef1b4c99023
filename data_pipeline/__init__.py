"""Data pipeline (docs/data.md), one module group per artifact: ``image_shards/`` and
``pyramid_shards/``. Shared by both: ``files`` (the platform's one I/O module: atomic writes,
sha256, deterministic tars), ``stream`` (the resumable shard stream both loaders use) and the
default directories below."""
from __future__ import annotations

import re
from pathlib import Path

from pretrain.config import ConfigError, SRDDConfig, home_dir

__all__ = ["source_slug", "shards_dir", "shards_manifest_path", "pyramids_dir"]


def source_slug(source: str) -> str:
    """``mnist`` -> ``mnist``; ``folder:/data/x`` -> ``folder-data-x`` (a directory-name-safe id)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-").lower()


def shards_dir(cfg: SRDDConfig) -> Path:
    """``data.shards_dir`` or ``<SRDD_HOME>/data/<source-slug>/shards``."""
    return Path(cfg.data.shards_dir) if cfg.data.shards_dir else home_dir() / "data" / source_slug(cfg.data.source) / "shards"


def shards_manifest_path(cfg: SRDDConfig) -> Path:
    """The image shards' ``manifest.json`` (what reference statistics and feature nets are tied to)."""
    path = shards_dir(cfg) / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"data.shards_dir: no {path}; run `srdd shards` for the run's dataset first")
    return path


def pyramids_dir(cfg: SRDDConfig) -> Path:
    """``data.pyramids_dir`` or ``<SRDD_HOME>/data/<source-slug>/pyramids``."""
    return Path(cfg.data.pyramids_dir) if cfg.data.pyramids_dir else home_dir() / "data" / source_slug(cfg.data.source) / "pyramids"
