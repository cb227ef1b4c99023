"""Resources and run name of one training job: what ``slurm/train_size.sh`` and the submit
function (slurm/runs.py) ask the cluster for.

    python -m slurm.launch d2 model.mask=srdd     # prints shell assignments (train_size.sh evals them)

Nodes, GPUs per node and wall time come from ``slurm.*`` when set, else from the size table
(pretrain/sizes.py). With no GPUs the job runs ``slurm.ranks_per_node`` CPU ranks per node
(gloo). The run name defaults to the size, plus ``-<mask>`` for any mask but var.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Sequence

from pretrain.config import SRDDConfig, load_config
from pretrain.outputs import run_dir
from pretrain.sizes import SIZES


@dataclass(frozen=True)
class Plan:
    run_name: str
    nodes: int
    gpus_per_node: int
    ranks_per_node: int
    time_min: int
    signal_s: int


def default_run_name(cfg: SRDDConfig) -> str:
    suffix = "" if cfg.model.mask == "var" else f"-{cfg.model.mask}"
    if cfg.model.mask == "window":
        suffix += str(cfg.model.attn_window)
    return f"{cfg.model.size}{suffix}"


def size_config(size: str, overrides: Sequence[str] = ()) -> SRDDConfig:
    """The config of a size's training run: ``model.size=SIZE`` + overrides, run_name defaulted."""
    cfg = load_config(overrides=[f"model.size={size}", *overrides])
    if not any(o.startswith("run_name=") for o in overrides):
        cfg.run_name = default_run_name(cfg)
    return cfg


def plan(cfg: SRDDConfig) -> Plan:
    size, s = SIZES[cfg.model.size], cfg.slurm
    gpus = size.gpus if s.gpus_per_node < 0 else s.gpus_per_node
    return Plan(run_name=cfg.run_name, nodes=s.nodes or size.nodes, gpus_per_node=gpus,
                ranks_per_node=gpus if gpus > 0 else s.ranks_per_node,
                time_min=s.time_min or size.time_min, signal_s=s.signal_s)


def sbatch_options(cfg: SRDDConfig) -> list[str]:
    """The sbatch flags of cfg's training job beyond train_size.sh's headers: the plan's
    resources, and partition / account / qos / CPUs per task from ``slurm.*``."""
    p, s = plan(cfg), cfg.slurm
    options = [f"--job-name=srdd-{p.run_name.replace('/', '-')}", f"--nodes={p.nodes}", f"--time={p.time_min}",
               f"--signal=B:USR1@{p.signal_s}", f"--cpus-per-task={s.cpus_per_task}"]
    if p.gpus_per_node > 0:
        options.append(f"--gpus-per-node={p.gpus_per_node}")
    options += [f"--{key}={getattr(s, key)}" for key in ("partition", "account", "qos") if getattr(s, key)]
    return options


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in SIZES:
        print(f"usage: python -m slurm.launch SIZE [key=value ...]; SIZE in {list(SIZES)}", file=sys.stderr)
        return 2
    cfg = size_config(argv[0], argv[1:])
    p = plan(cfg)
    values = {"RUN_NAME": p.run_name, "RUN_DIR": str(run_dir(cfg).resolve()), "NODES": p.nodes,
              "GPUS_PER_NODE": p.gpus_per_node, "RANKS_PER_NODE": p.ranks_per_node,
              "TIME_MIN": p.time_min, "SIGNAL_S": p.signal_s, "SBATCH_OPTIONS": shlex.join(sbatch_options(cfg))}
    print("\n".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
