"""Read a runs directory (the contract `srdd report` consumes; docs/scaling.md "Runs directory").

    DIR/runs.csv                    one row per run (contracts: run,size,mask,params,...,val_loss,status)
    DIR/<run>/metrics.jsonl         train / val / eval records of each run
    DIR/<run>/samples/*.png         sample grids (the newest one is shown)
    DIR/bench/sampling.json         bench/sampling.py output: a list of rows or {"rows": [...]}
    DIR/ablation/ablation.csv       the ablation grid's table (+ DIR/ablation/**/*.png grids)
    DIR/refinement.csv              `srdd refine-study`'s table (+ refinement.json: verdicts, tuning, command)

Every reader returns None / empty when its input is absent, and ``missing`` says
what was looked for, so each report section can degrade to one explanatory line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pretrain.outputs import read_jsonl
from pretrain.sizes import SIZES

SAMPLING_COLUMNS = ("variant", "size", "latency_s", "flops", "kv_cache_bytes_peak", "latency_ratio_vs_var", "kv_ratio_vs_var")


class RunsDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def missing(self, rel: str) -> str:
        return f"not available: {self.root / rel} is missing"

    def table(self) -> pd.DataFrame | None:
        path = self.root / "runs.csv"
        return pd.read_csv(path) if path.is_file() else None

    def runs(self) -> list[str]:
        """Runs named in runs.csv, else every subdirectory holding a metrics.jsonl."""
        table = self.table()
        if table is not None and "run" in table.columns:
            return [str(r) for r in table["run"]]
        return sorted(p.parent.name for p in self.root.glob("*/metrics.jsonl"))

    def records(self, run: str, kind: str) -> pd.DataFrame:
        rows = [r for r in read_jsonl(self.root / run / "metrics.jsonl") if r.get("kind") == kind]
        return pd.DataFrame(rows)

    def eval_table(self) -> pd.DataFrame | None:
        """The last eval record of each run (metric columns only; the sampler settings and FD by
        number of scales are dropped)."""
        rows = []
        for run in self.runs():
            ev = self.records(run, "eval")
            if len(ev):
                last = ev.iloc[-1].drop(labels=["kind", "sampler", "fd_by_scales"], errors="ignore").dropna()
                rows.append({"run": run, **last.to_dict()})
        return pd.DataFrame(rows).set_index("run") if rows else None

    def sample_grids(self) -> dict[str, list[Path]]:
        """Every run directory's sample grids: ``samples/*.png`` and the ``grid.png`` that
        ``srdd sample`` writes per setting (``samples/seed<S>-<refine>/grid.png``), by name.
        Runs outside the table (e.g. a distilled student) are included."""
        out: dict[str, list[Path]] = {}
        for samples in sorted(self.root.glob("*/samples")):
            pngs = sorted([*samples.glob("*.png"), *samples.glob("*/grid.png")])
            if pngs:
                out[samples.parent.name] = pngs
        return out

    def sampling_rows(self) -> pd.DataFrame | None:
        path = self.root / "bench" / "sampling.json"
        if not path.is_file():
            return None
        obj: Any = json.loads(path.read_text())
        rows = obj.get("rows", []) if isinstance(obj, dict) else obj
        frame = pd.DataFrame(rows)
        return frame[[c for c in SAMPLING_COLUMNS if c in frame.columns]] if len(frame) else None

    def refinement(self) -> tuple[pd.DataFrame | None, dict[str, Any]]:
        """(refinement.csv, refinement.json or {}) of `srdd refine-study` (docs/sampling.md)."""
        path = self.root / "refinement.csv"
        if not path.is_file():
            return None, {}
        summary = self.root / "refinement.json"
        return pd.read_csv(path), (json.loads(summary.read_text()) if summary.is_file() else {})

    def ablation(self) -> tuple[pd.DataFrame | None, list[Path]]:
        d = self.root / "ablation"
        table = pd.read_csv(d / "ablation.csv") if (d / "ablation.csv").is_file() else None
        return table, sorted(d.rglob("*.png")) if d.is_dir() else []


def next_size(sizes: list[str]) -> str | None:
    """The row of pretrain/sizes.py above the largest size present (None when it is the top one)."""
    depths = {name: s.depth for name, s in SIZES.items()}
    known = [s for s in sizes if s in depths]
    if not known:
        return None
    top = max(depths[s] for s in known)
    above = sorted((d, n) for n, d in depths.items() if d > top)
    return above[0][1] if above else None


def scaled_params(params: float, size_from: str, size_to: str) -> float:
    """Parameters of ``size_to`` estimated from a measured size: N grows as depth * width^2 = 4096 depth^3 (VAR's rule)."""
    return params * (SIZES[size_to].depth / SIZES[size_from].depth) ** 3
