"""The runs table: one CSV row per training run, what the scaling fits read (contract columns).

``run,size,mask,params,non_embedding_params,tokens,flops,train_loss,val_loss,
val_loss_s0..val_loss_s{K-1},status``, then ``flops_executed`` (the FLOPs the attention path
runs; ``flops`` counts attended keys only, pretrain/model/flops.py) and ``seed`` (the run's
training seed: data order and init), then what later stages add (``srdd eval``: ``fd``,
``class_acc``, ...). The numbers come from the run directory
(final.json, the last records of metrics.jsonl, config.yaml for the seed of runs whose final.json
predates it); ``status`` from whoever ran it: the orchestration's completion check
(slurm.runs.run_status: completed | incomplete | failed | stale).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

from pretrain.outputs import atomic_write_text, read_jsonl

BASE_COLUMNS = ["run", "size", "mask", "params", "non_embedding_params", "tokens", "flops",
                "train_loss", "val_loss"]
RUN_COLUMNS = ["flops_executed", "seed"]  # after status: every run has them (older tables may not)


def run_row(run_dir: Path, status: str) -> dict[str, Any]:
    """Row of one run directory, from final.json and the last train/val records of metrics.jsonl."""
    run_dir = Path(run_dir)
    final_path = run_dir / "final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else {}
    records = read_jsonl(run_dir / "metrics.jsonl")
    last = {kind: next((r for r in reversed(records) if r.get("kind") == kind), {}) for kind in ("train", "val")}
    row: dict[str, Any] = {
        "run": run_dir.name, "size": final.get("size", ""), "mask": final.get("mask", ""),
        "params": final.get("params", ""), "non_embedding_params": final.get("non_embedding_params", ""),
        "tokens": final.get("tokens", last["train"].get("tokens", "")),
        "flops": final.get("flops", last["train"].get("flops", "")),
        "train_loss": last["train"].get("loss", ""),
        "val_loss": final.get("val_loss", last["val"].get("loss", "")),
    }
    for k, v in enumerate(final.get("val_loss_per_scale", last["val"].get("loss_per_scale", []))):
        row[f"val_loss_s{k}"] = v
    row["status"] = status
    row["flops_executed"] = final.get("flops_executed", last["train"].get("flops_executed", ""))
    row["seed"] = final.get("seed", _config_seed(run_dir))
    return row


def _config_seed(run_dir: Path) -> Any:
    """The ``seed`` key of the run's config.yaml ('' without one)."""
    import yaml

    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("seed", "") if path.is_file() else ""


def write_runs_csv(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    rows = list(rows)
    scale_cols = sorted({k for r in rows for k in r if k.startswith("val_loss_s")}, key=lambda k: int(k[10:]))
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS) - set(scale_cols) - {"status", *RUN_COLUMNS})
    columns = BASE_COLUMNS + scale_cols + ["status"] + [c for c in RUN_COLUMNS if any(c in r for r in rows)] + extra
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return Path(path)
