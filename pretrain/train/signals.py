"""Preemption: a stop request from a signal or from a flag file, acted on at a step boundary.

SLURM sends SIGUSR1 ``slurm.signal_s`` before the time limit (``--signal=B:USR1@S``, to the
batch shell of slurm/train_size.sh), SIGUSR2 to every task of a submitit job (submitit's
``--signal=USR2@S``) and SIGTERM on preemption or scancel. A signal may reach the training processes
directly, or only the batch shell, whose trap then touches ``<run>/PREEMPT`` (that works on
every node without knowing process ids, as the run directory is shared). The handler only
sets a flag: the loop checks it between steps, all ranks agree via an all-reduce, the run
checkpoints, writes ``<run>/REQUEUE`` and exits 0; the batch script then runs
``scontrol requeue`` and the restarted job resumes from that checkpoint.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

from pretrain.outputs import atomic_write_text

log = logging.getLogger("srdd.train")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
FLAG_FILE = "PREEMPT"
REQUEUE_FILE = "REQUEUE"


class StopRequest:
    """Install handlers for SIGUSR1/SIGUSR2/SIGTERM; ``requested()`` is this rank's local view."""

    def __init__(self, run_dir: Path):
        self.flag = Path(run_dir) / FLAG_FILE
        self.signum: int | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        log.warning("received %s: will checkpoint and stop after this step", signal.Signals(signum).name)

    def requested(self) -> bool:
        return self.signum is not None or self.flag.exists()

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def mark_for_requeue(run_dir: Path) -> None:
    """Rank 0 after the preemption checkpoint: consume the flag, leave the note the batch script reads."""
    (Path(run_dir) / FLAG_FILE).unlink(missing_ok=True)
    atomic_write_text(Path(run_dir) / REQUEUE_FILE, "checkpointed on a stop request; requeue to continue\n")
