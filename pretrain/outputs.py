"""Outputs layout and atomic file writes.

Layout (README "Outputs"): ``<SRDD_HOME>/<run_name>/`` holds ``config.yaml``,
``metrics.jsonl``, ``checkpoints/step_XXXXXXXX/`` and ``samples/``. Every file
is written to a temporary name in the same directory and renamed, so a killed
job never leaves a half-written output that a rerun would trust.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pretrain.config import SRDDConfig, home_dir, to_yaml


_UMASK = os.umask(0)
os.umask(_UMASK)


def run_dir(cfg: SRDDConfig) -> Path:
    return home_dir() / cfg.run_name


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual umask mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_config(cfg: SRDDConfig, directory: str | os.PathLike) -> Path:
    """Write the resolved config next to an output (``<directory>/config.yaml``)."""
    path = Path(directory) / "config.yaml"
    atomic_write_text(path, to_yaml(cfg))
    return path


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it (metrics survive a SIGKILL up to the last record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file, ignoring a torn last line left by a killed writer."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
