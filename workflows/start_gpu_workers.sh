#!/usr/bin/env bash
# Start one inference-capable Dask worker per GPU of this host.
#   workflows/start_gpu_workers.sh tcp://SCHEDULER_HOST:8786
# Each worker sees one GPU and advertises the resource GPU=1, so inference tasks (which ask for
# GPU=1) run one at a time per GPU; its other threads take post-processing tasks. Its torch CPU
# threads are THREADS (set inside the worker from WSI_PIPELINE_INFER_THREADS), not every core.
# Env: THREADS (per worker, default 4), MEMORY (per worker, default auto).
set -euo pipefail
SCHEDULER="${1:?usage: $0 tcp://SCHEDULER_HOST:PORT}"
THREADS="${THREADS:-4}"
MEMORY="${MEMORY:-auto}"
mapfile -t GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader)
if [ "${#GPUS[@]}" -eq 0 ]; then
  echo "no GPU found by nvidia-smi on $(hostname)" >&2
  exit 1
fi
pids=()
for gpu in "${GPUS[@]}"; do
  CUDA_VISIBLE_DEVICES="${gpu}" WSI_PIPELINE_INFER_THREADS="${THREADS}" dask worker "${SCHEDULER}" --name "$(hostname -s)-gpu${gpu}" \
    --nthreads "${THREADS}" --memory-limit "${MEMORY}" --resources GPU=1 &
  pids+=("$!")
done
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
wait
