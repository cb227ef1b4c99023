"""The runs table: one CSV row per training run, what the scaling fits read (contract columns).

``run,size,mask,params,non_embedding_params,tokens,flops,train_loss,val_loss,
val_loss_s0..val_loss_s{K-1},status``. The numbers come from the run directory (final.json, the
last records of metrics.jsonl); ``status`` from whoever ran it: the orchestration's completion
check (slurm.runs.run_status: completed | incomplete | failed | stale).
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
    return row


def write_runs_csv(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    rows = list(rows)
    scale_cols = sorted({k for r in rows for k in r if k.startswith("val_loss_s")}, key=lambda k: int(k[10:]))
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS) - set(scale_cols) - {"status"})
    columns = BASE_COLUMNS + scale_cols + ["status"] + extra
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return Path(path)
