"""Process-group set-up shared by every distributed stage.

Works the same under ``torchrun`` / ``srun`` (RANK, WORLD_SIZE, LOCAL_RANK set)
and as a plain single process (a one-rank group on a free localhost port).
On machines without CUDA, DeepSpeed's CPU accelerator and gloo are used.
"""
from __future__ import annotations

import os
import socket
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


def init_distributed() -> DistInfo:
    """Initialise (once) the default process group and return this rank's coordinates."""
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:  # single process: make a one-rank group on loopback
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info
