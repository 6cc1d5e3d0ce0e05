#!/usr/bin/env bash
# One machine, several GPUs: one training process per GPU, all on one results folder. They share the grid: each
# run is claimed by one worker (helpers/training/claims.py), so every run trains once, on one GPU.
#   bash helpers/training/examples/several_gpus.sh 4 --profile t4        # 4 GPUs, the t4 grid
# With no GPU (as the test does) the workers share the CPU. Extra arguments go to every worker.
set -euo pipefail
gpus="${1:?usage: several_gpus.sh NUMBER_OF_GPUS [training options]}"
shift
cd "$(dirname "$0")/../../.."
python="${PYTHON:-python}"
logs="${LOG_DIR:-results/logs}"
mkdir -p "$logs"
pids=()
for ((gpu = 0; gpu < gpus; gpu++)); do
  CUDA_VISIBLE_DEVICES="$gpu" "$python" -m helpers.training "$@" > "$logs/worker-$gpu.log" 2>&1 &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
