#!/usr/bin/env bash
# Submit a cohort as a SLURM array (one slide per task, workflows/slurm_array.sbatch) and a
# summary job that runs `wsi-pipeline summarize OUT` once every task has ended.
#   workflows/slurm_array.sh SOURCE OUT [run flags...]
# Env: SBATCH_ARGS (extra sbatch flags for the array: partition, account, --cpus-per-task...),
#      MAX_PARALLEL (tasks at once, default 50), RUN_CONFIG (a --config file: its discovery
#      settings decide which files are slides), WSI_PIPELINE_VENV (activated in every job).
# Prints the array's and the summary's job ids.
set -euo pipefail
SOURCE="${1:?usage: $0 SOURCE OUT [run flags...]}"
OUT="${2:?usage: $0 SOURCE OUT [run flags...]}"
shift 2
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${WSI_PIPELINE_VENV:-}" ]; then
  # shellcheck disable=SC1091
  source "${WSI_PIPELINE_VENV}/bin/activate"
fi
# The number of slides, found the way `run` finds them (the same order in every task).
N="$(python - "${SOURCE}" "${RUN_CONFIG:-}" <<'PY'
import sys
from pathlib import Path

from wsi_pipeline.cohort.config import load_run_config
from wsi_pipeline.cohort.discover import discover

cfg = load_run_config(sys.argv[2] or None).discovery
print(len(discover(Path(sys.argv[1]), tuple(cfg.extensions), cfg.probe_unknown)))
PY
)"
if [ "${N}" -eq 0 ]; then
  echo "no slides found in ${SOURCE}" >&2
  exit 1
fi
mkdir -p "${OUT}"
extra=()
[ -n "${RUN_CONFIG:-}" ] && extra+=(--config "${RUN_CONFIG}")
# shellcheck disable=SC2086  # SBATCH_ARGS is a list of flags
array="$(sbatch --parsable --array="0-$((N - 1))%${MAX_PARALLEL:-50}" ${SBATCH_ARGS:-} \
  "${HERE}/slurm_array.sbatch" "${SOURCE}" "${OUT}" "${extra[@]}" "$@")"
summary="$(sbatch --parsable --job-name=wsi-summary --dependency="afterany:${array}" \
  --output="${OUT}/slurm-summary-%j.out" ${SBATCH_ARGS:-} \
  --wrap="wsi-pipeline summarize $(printf '%q' "${OUT}")")"
echo "array ${array} (${N} slides), summary ${summary}: ${OUT}"
