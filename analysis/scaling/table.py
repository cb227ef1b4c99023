"""Read and validate a runs table (CSV, one row per run; contract in docs/scaling.md).

Errors name the file, the column and the offending lines, because a fit is the
last step of a long sweep and the user must be able to fix the table by hand.
Rows of unfinished runs (``status`` other than done/ok) are skipped and counted,
not fitted: a sweep with one crashed size still gives a fit of the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# Statuses of a finished run; any other value (failed, running, ...) skips the row.
DONE_STATUSES = frozenset({"", "done", "ok", "completed", "finished"})


class RunsTableError(ValueError):
    """The runs table cannot be fitted; the message names the columns and lines."""


@dataclass
class RunsTable:
    """The rows a fit uses, in a canonical order (sorted by the fitted columns)."""

    frame: pd.DataFrame
    source: str
    loss_column: str
    skipped: list[str] = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        return self.frame[name].to_numpy(dtype=float)

    @property
    def loss(self) -> np.ndarray:
        return self.column(self.loss_column)


def resolve_loss_column(frame: pd.DataFrame, loss_column: str) -> str:
    """``auto`` picks ``val_loss`` (the contract's fitted loss) and falls back to ``loss``."""
    if loss_column != "auto":
        return loss_column
    return "val_loss" if "val_loss" in frame.columns else "loss"


def _line_labels(frame: pd.DataFrame, mask: np.ndarray) -> str:
    """'line 4 (run d2-var), line 7' -- CSV line numbers (the header is line 1)."""
    labels = []
    for i in np.flatnonzero(mask)[:10]:
        run = frame["run"].iloc[i] if "run" in frame.columns else None
        labels.append(f"line {int(frame.index[i]) + 2}" + (f" (run {run})" if isinstance(run, str) and run else ""))
    more = int(mask.sum()) - len(labels)
    return ", ".join(labels) + (f" and {more} more" if more > 0 else "")


def validate_frame(frame: pd.DataFrame, columns: list[str], source: str, loss_column: str = "auto",
                   min_points: int = 1) -> RunsTable:
    """Keep finished runs, check ``columns`` (+ the loss) exist and are finite and > 0, sort canonically."""
    loss_column = resolve_loss_column(frame, loss_column)
    needed = list(dict.fromkeys([*columns, loss_column]))
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise RunsTableError(f"{source}: missing column(s) {missing}; have {list(frame.columns)}")
    skipped: list[str] = []
    if "status" in frame.columns:
        status = frame["status"].fillna("").astype(str).str.strip().str.lower()
        unfinished = ~status.isin(DONE_STATUSES).to_numpy()
        if unfinished.any():
            skipped = [f"{_line_labels(frame, unfinished)}: status not done"]
            frame = frame[~unfinished]
    for col in needed:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            raise RunsTableError(
                f"{source}: column {col!r} must be a finite number > 0; bad at {_line_labels(frame, bad)} "
                f"(values {[frame[col].iloc[i] for i in np.flatnonzero(bad)[:10]]})")
    frame = frame.assign(**{c: pd.to_numeric(frame[c]) for c in needed})
    if len(frame) < min_points:
        raise RunsTableError(
            f"{source}: {len(frame)} usable row(s) but the fit has {min_points} parameters; need at least {min_points}")
    # Canonical order: every downstream result (bootstrap included) is independent of the CSV's row order.
    frame = frame.sort_values(needed, kind="mergesort").reset_index(drop=True)
    return RunsTable(frame=frame, source=source, loss_column=loss_column, skipped=skipped)


def read_runs(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise RunsTableError(f"runs table {path} not found")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RunsTableError(f"{path}: not a readable CSV ({e})") from None
