"""Process-group set-up shared by every distributed stage.

Works the same under ``torchrun`` / ``srun`` (RANK, WORLD_SIZE, LOCAL_RANK set)
and as a plain single process (a one-rank group on a free localhost port).
On machines without CUDA, DeepSpeed's CPU accelerator and gloo are used.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerator_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# DeepSpeed reads DS_ACCELERATOR at import time: set it before anyone imports deepspeed.
os.environ.setdefault("DS_ACCELERATOR", accelerator_name())


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


_OWNER = "SRDD_SINGLE_PROCESS"


def _single_process_mark() -> str:
    return f"{os.getpid()}:{os.environ.get('MASTER_PORT')}"


def _launched_by_a_launcher() -> bool:
    """True under torchrun / srun / deepspeed: RANK is set, and not by our own single-process set-up.

    Variables a parent's single-process set-up left behind are recognised by the mark it wrote
    (its pid and port): a launcher started in between rewrites MASTER_PORT, which breaks the mark.
    """
    if "RANK" not in os.environ:
        return False
    owner_pid, _, owner_port = os.environ.get(_OWNER, "").partition(":")
    inherited = owner_pid not in ("", str(os.getpid())) and owner_port == os.environ.get("MASTER_PORT")
    return not inherited


def init_distributed() -> DistInfo:
    """Initialise (once) the default process group and return this rank's coordinates."""
    import deepspeed
    import torch.distributed as dist

    init_method = None
    if not _launched_by_a_launcher():
        # Single process: a one-rank group that rendezvous through a private file store, so it
        # binds no port (a "free" port can be taken by a concurrent job before we bind it).
        # MASTER_* stay set because DeepSpeed's CPU shared-memory comm names its segment after them.
        # The owner pid marks these variables as ours, so a child process that inherits them
        # (a stage launched from a notebook or a test) does not mistake them for a launcher's.
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
        os.environ[_OWNER] = _single_process_mark()
        init_method = f"file://{tempfile.mkdtemp(prefix='srdd-pg-')}/store"
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, init_method=init_method,
                                   rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info
