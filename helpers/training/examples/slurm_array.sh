#!/usr/bin/env bash
# A Slurm job array: each array task trains its fixed share of the grid (--shard I/N).
#   sbatch --array=0-3 helpers/training/examples/slurm_array.sh --profile t4
# Without --array the job trains the whole grid, shared through claims with any other job on the
# same results folder (every run once).
# Time limits and preemption: Slurm sends this script SIGUSR1 two minutes before the time limit
# (--signal=B:USR1@120), and SIGTERM when it preempts the job. The script passes the signal on to
# the training, which saves last.pt, releases its claim and exits with code 75; the script then
# requeues the job (--requeue), and the requeued job resumes each run where it stopped.
#SBATCH --job-name=lesion-grid
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -uo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../../..}"
python="${PYTHON:-python}"
shard=()
if [ -n "${SLURM_ARRAY_TASK_COUNT:-}" ]; then
  shard=(--shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}")
fi
"$python" -m helpers.training ${shard[@]+"${shard[@]}"} "$@" &
training=$!
trap 'kill -USR1 "$training" 2>/dev/null' USR1 TERM
status=0
wait "$training" || status=$?
while kill -0 "$training" 2>/dev/null; do  # a signal ends `wait` early: wait for the save
  status=0
  wait "$training" || status=$?
done
if [ "$status" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "Requeueing job ${SLURM_JOB_ID}: it resumes where the training stopped."
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
