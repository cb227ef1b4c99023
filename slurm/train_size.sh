#!/bin/bash
# Train one transformer size with DeepSpeed on SLURM; checkpoints + requeues itself on a signal.
#
#   sbatch slurm/train_size.sh SIZE [key=value ...]   # resources: these headers / sbatch flags
#   bash   slurm/train_size.sh SIZE [key=value ...]   # outside a job: submits itself with the size
#                                                     # table's nodes/GPUs/time (pretrain/sizes.py) and
#                                                     # slurm.* (python -m slurm.launch prints the plan)
#
# One srun task per node runs torchrun (rendezvous on the first node of the allocation), which
# starts one rank per GPU, or slurm.ranks_per_node CPU ranks (gloo) when the node has no GPU.
# SLURM sends SIGUSR1 slurm.signal_s before the time limit (SIGTERM on preemption): the trap
# touches <run>/PREEMPT, the ranks checkpoint at the next step boundary and leave <run>/REQUEUE,
# and this script requeues the job, which resumes from that checkpoint (the one preemption protocol
# of every launcher: slurm/runs.py). A requeued job may get another number of nodes (or GPUs): the
# run resumes on the new number of ranks with the same global batch (docs/training.md, "Elastic
# resume"). Multi-node recipe: docs/slurm.md, "Several nodes". See docs/training.md.
#SBATCH --job-name=srdd-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=60
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch slurm/train_size.sh SIZE [key=value ...]" >&2
    exit 2
fi
SIZE=$1
shift

REPO=${SRDD_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}
PYTHON=${SRDD_PYTHON:-$REPO/.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
cd "$REPO"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# RUN_NAME RUN_DIR NODES GPUS_PER_NODE RANKS_PER_NODE TIME_MIN SIGNAL_S SBATCH_OPTIONS
eval "$("$PYTHON" -m slurm.launch "$SIZE" "$@")"

if [[ -z ${SLURM_JOB_ID:-} ]]; then
    eval "options=($SBATCH_OPTIONS)"   # the plan's nodes/time/GPUs/signal + slurm.partition/account/qos/cpus
    mkdir -p "$RUN_DIR"
    exec sbatch "${options[@]}" --output="$RUN_DIR/slurm-%j.out" "$0" "$SIZE" "$@"
fi

nodes=${SLURM_JOB_NUM_NODES:-1}
if [[ -n ${SLURM_GPUS_ON_NODE:-} && ${SLURM_GPUS_ON_NODE} -gt 0 ]]; then
    RANKS_PER_NODE=$SLURM_GPUS_ON_NODE
fi
# Rendezvous on the first node, at the address SLURM reaches it by (NodeAddr: a node name need not
# resolve, e.g. several nodes on one host); port SRDD_RDZV_PORT or one derived from the job id, so
# concurrent jobs sharing a node do not collide (docs/slurm.md, "Several nodes").
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
master=$(scontrol show node "$first_node" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
master=${master:-$first_node}
port=${SRDD_RDZV_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
mkdir -p "$RUN_DIR"
echo "[train_size] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $RUN_NAME on $nodes node(s) x $RANKS_PER_NODE ranks, rendezvous $master:$port"

on_signal() {
    echo "[train_size] got $1: asking the ranks to checkpoint and stop"
    touch "$RUN_DIR/PREEMPT"
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

# --ntasks explicitly: a job requeued onto fewer nodes keeps its first SLURM_NTASKS in the environment,
# and srun would start that many torchrun agents on the nodes it has now.
srun --kill-on-bad-exit=1 --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
    "$PYTHON" -m torch.distributed.run --nnodes="$nodes" --nproc_per_node="$RANKS_PER_NODE" \
    --rdzv_backend=c10d --rdzv_endpoint="$master:$port" --rdzv_id="$SLURM_JOB_ID" \
    -m pretrain.cli train "model.size=$SIZE" "run_name=$RUN_NAME" "$@" &
pid=$!
# A trapped signal interrupts `wait`; keep waiting until srun itself has exited.
rc=0
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" && rc=0 || rc=$?
done
rm -f "$RUN_DIR/PREEMPT"

if [[ -f $RUN_DIR/REQUEUE ]]; then
    rm -f "$RUN_DIR/REQUEUE"
    echo "[train_size] checkpointed; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
echo "[train_size] finished with exit code $rc"
exit "$rc"
