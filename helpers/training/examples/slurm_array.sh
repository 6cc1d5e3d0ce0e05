#!/usr/bin/env bash
# A Slurm job array: each array task trains its fixed share of the grid (--shard I/N).
#   sbatch --array=0-3 helpers/training/examples/slurm_array.sh --profile t4
# Or, without a fixed split, drop --shard: the tasks then share the grid through claims (every run once).
#SBATCH --job-name=lesion-grid
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../../..}"
python="${PYTHON:-python}"
exec "$python" -m helpers.training --shard "${SLURM_ARRAY_TASK_ID:?run it with sbatch --array}/${SLURM_ARRAY_TASK_COUNT:?}" "$@"
