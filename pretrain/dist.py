"""Process-group set-up shared by every distributed stage.

Works the same under ``torchrun`` / ``srun`` (RANK, WORLD_SIZE, LOCAL_RANK set)
and as a plain single process (a one-rank group on a free localhost port).
On machines without CUDA, DeepSpeed's CPU accelerator and gloo are used.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


log = logging.getLogger(__name__)

# DeepSpeed's CPU accelerator JIT-compiles a shared-memory comm op (~40 s on 2 cores) the first
# time a group starts, under torch's FileBaton: a lock file that every other process waits on for
# as long as it exists. A compile that was killed (a timed-out test, a cancelled job) leaves that
# file behind and every later run on the machine hangs in init. A lock older than any real compile
# is such a leftover.
SHM_OP_NAME = "deepspeed_shm_comm"
STALE_BUILD_LOCK_S = 600.0


def release_stale_build_locks(max_age_s: float = STALE_BUILD_LOCK_S) -> list[Path]:
    """Remove the shm op's build locks older than `max_age_s`; return the paths removed.

    Looks where torch puts extensions: ``$TORCH_EXTENSIONS_DIR/<op>`` or, by default,
    ``<default build root>/<python+accelerator>/<op>``.
    """
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    removed = []
    for lock in [*root.glob(f"{SHM_OP_NAME}/lock"), *root.glob(f"*/{SHM_OP_NAME}/lock")]:
        try:
            age_s = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            continue
        if age_s > max_age_s:
            log.warning("removing a stale build lock %s (%.0f s old; a compile takes under a minute)", lock, age_s)
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def prebuild_ops() -> None:
    """Compile the CPU shm comm op now, in one process (``make install`` calls this), so that no
    run compiles it concurrently with others or is killed mid-compile. No-op with CUDA."""
    if torch.cuda.is_available():
        return
    release_stale_build_locks()
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()


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
        if not torch.cuda.is_available():
            release_stale_build_locks()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, init_method=init_method,
                                   rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info
