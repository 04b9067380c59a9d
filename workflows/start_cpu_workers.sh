#!/usr/bin/env bash
# Start post-processing workers on a CPU host (no inference: they do not offer GPU=1).
#   workflows/start_cpu_workers.sh tcp://SCHEDULER_HOST:8786
# On a CPU-only cluster, give exactly one worker per host GPU=1 (INFER_SLOT=1): it becomes the
# host's inference worker, and the network inside it (torch threads, OpenVINO streams) uses the
# cores given by TORCH_THREADS (default: all). The nanny would reset OMP_NUM_THREADS to 1; the run
# sets the count inside the worker from WSI_PIPELINE_INFER_THREADS (wsi_pipeline.cohort.cluster).
# Env: NWORKERS (default: cores/4), THREADS (default 4), MEMORY (per worker), INFER_SLOT (0/1).
set -euo pipefail
SCHEDULER="${1:?usage: $0 tcp://SCHEDULER_HOST:PORT}"
CORES="$(nproc)"
THREADS="${THREADS:-4}"
NWORKERS="${NWORKERS:-$(( CORES / THREADS > 0 ? CORES / THREADS : 1 ))}"
MEMORY="${MEMORY:-auto}"
pids=()
if [ "${INFER_SLOT:-0}" = "1" ]; then
  WSI_PIPELINE_INFER_THREADS="${TORCH_THREADS:-${CORES}}" dask worker "${SCHEDULER}" --name "$(hostname -s)-infer" \
    --nthreads 1 --memory-limit "${MEMORY}" --resources GPU=1 &
  pids+=("$!")
fi
dask worker "${SCHEDULER}" --nworkers "${NWORKERS}" --nthreads "${THREADS}" --memory-limit "${MEMORY}" &
pids+=("$!")
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
wait
