"""Run metrics: ``<run>/metrics.jsonl`` is the source of truth; wandb mirrors it.

Record kinds and keys are a cross-area contract (train / val; tokenizer_train / tokenizer_val;
distill; eval is written by ``srdd eval``; docs/training.md). wandb runs offline by default with its files inside the run
directory, and keeps one run id per run directory so a resumed job continues the
same wandb run. Only rank 0 logs.
"""
from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from pretrain.outputs import append_jsonl, atomic_write_text, read_jsonl

log = logging.getLogger("srdd.train")


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, wandb_mode: str = "offline",
                 project: str = "srdd", run_name: str = "", config: dict[str, Any] | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.records = len(read_jsonl(self.path)) if enabled else 0  # what a checkpoint's meta.json records
        self._wandb = None
        if enabled and wandb_mode != "disabled":
            self._wandb = _start_wandb(Path(run_dir), wandb_mode, project, run_name, config or {})

    def rewind(self, step: int, records: int | None) -> None:
        """On resume: cut metrics.jsonl back to the ``records`` it held when the checkpoint was
        written (a killed job logged steps, or end-of-run records, that the resumed one will redo),
        so it reads as one uninterrupted run. ``None`` (a finished run, or a checkpoint that did not
        count them): keep the records up to ``step``."""
        if not self.enabled or not self.path.exists():
            return
        kept = read_jsonl(self.path)
        kept = kept[:records] if records is not None else [r for r in kept if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        self.records = len(kept)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        self.records += 1
        if self._wandb is not None:
            kind = record["kind"]
            flat = {f"{kind}/{k}": v for k, v in record.items() if k not in ("kind", "step") and not isinstance(v, list)}
            for key in ("loss_per_scale", "acc_per_scale"):
                for k, v in enumerate(record.get(key, [])):
                    flat[f"{kind}/{key[:-10]}_s{k}"] = v
            self._wandb.log(flat, step=record["step"])

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(run_dir: Path, mode: str, project: str, name: str, config: dict[str, Any]) -> Any:
    import wandb

    id_file = run_dir / "wandb_id.txt"
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(8)
        atomic_write_text(id_file, run_id + "\n")
    try:
        return wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir),
                          mode=mode, config=config)
    except Exception as err:  # wandb is a mirror; metrics.jsonl must not depend on it
        log.warning("wandb disabled for this run: %s", err)
        return None
