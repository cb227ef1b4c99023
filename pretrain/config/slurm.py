"""Config section ``slurm``: where and how stages are submitted to a SLURM cluster."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.config.fields import bounded, choice, doc


@dataclass
class SlurmConfig:
    enabled: bool = doc(False, "submit through SLURM (sbatch/submitit) instead of running locally")
    launcher: str = choice("submitit", ("submitit", "sbatch"),
                           "how a training run is submitted when enabled: a submitit job (one task per rank) "
                           "or sbatch slurm/train_size.sh (torchrun per node)")
    partition: str = doc("", "empty = cluster default")
    account: str = doc("", "")
    qos: str = doc("", "")
    nodes: int = bounded(0, min=0, help="0 = the size table's default")
    gpus_per_node: int = bounded(-1, min=-1, help="-1 = the size table's default; 0 = CPU ranks")
    cpus_per_task: int = bounded(2, min=1)
    ranks_per_node: int = bounded(2, min=1, help="CPU ranks per node when gpus_per_node = 0")
    time_min: int = bounded(0, min=0, help="0 = the size table's default")
    array_tasks: int = bounded(2, min=1, help="tasks of the pyramid-precompute array")
    array_parallelism: int = bounded(2, min=1)
    signal_s: int = bounded(120, min=10, help="signal this long before the time limit (train_size.sh: USR1; submitit: USR2): checkpoint + requeue + resume")
    log_dir: str = doc("", "empty = <SRDD_HOME>/slurm_logs")
