#!/usr/bin/env bash
# Training on a Slurm cluster (one task per GPU). Resumes automatically from the newest
# complete checkpoint in WORK_DIR, so a requeued or restarted job continues
# (AUTO_RESUME=0 starts afresh; an explicit --resume CKPT wins).
#   [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
    exit 2
fi
RESUME=()
if [ "${AUTO_RESUME:-1}" != "0" ]; then
    RESUME=(--resume)
fi
exec bash "$(dirname "$0")/_srun.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${RESUME[@]}" "${@:5}"
