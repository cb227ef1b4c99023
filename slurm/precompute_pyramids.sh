#!/bin/bash
# Precompute pyramid shards as a SLURM job array: task i of N encodes input shards i, i+N, ...
#
#   sbatch --array=0-3 slurm/precompute_pyramids.sh SHARDS TOKENIZER OUT [key=value ...]
#   bash   slurm/precompute_pyramids.sh SHARDS TOKENIZER OUT [key=value ...]   # one task, locally
#
# SHARDS: image shards (directory, glob or brace pattern); TOKENIZER: checkpoint file; OUT: the
# pyramid directory. Every task writes only its own shards (temp name + rename, then a manifest),
# so tasks may be killed, requeued or rerun in any order; the task that completes the set writes
# OUT/manifest.json. Rerunning the whole array skips finished shards. See docs/data.md.
#SBATCH --job-name=srdd-pyramids
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --time=60
#SBATCH --requeue
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: sbatch --array=0-N slurm/precompute_pyramids.sh SHARDS TOKENIZER OUT [key=value ...]" >&2
    exit 2
fi
SHARDS=$1 TOKENIZER=$2 OUT=$3
shift 3

REPO=${SRDD_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}
SRDD=${SRDD:-$REPO/.venv/bin/srdd}
[[ -x $SRDD ]] || SRDD=srdd
# Array ids need not start at 0 (--array=1-4): the slice index is relative to the first id.
TASK_INDEX=$(( ${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0} ))
TASK_COUNT=${SLURM_ARRAY_TASK_COUNT:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

echo "pyramids task $TASK_INDEX/$TASK_COUNT on $(hostname): $SHARDS -> $OUT"
exec "$SRDD" pyramids --shards "$SHARDS" --tokenizer "$TOKENIZER" --out "$OUT" \
    --task-index "$TASK_INDEX" --task-count "$TASK_COUNT" "$@"
