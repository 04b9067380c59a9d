#!/usr/bin/env bash
# GPU check of the engine: one prepared script for a CUDA machine (e.g. the device machine, which
# runs it from a copy of the repo at its root and gives $OUT for results).
#
#   bash benchmarks/gpu_check.sh                 # CUDA: 40k² synthetic slide, batch 16 (end to end)
#                                                #   then 64 (inference only), 4 and 8 reader threads
#   bash benchmarks/gpu_check.sh --cpu-smoke     # the same path on CPU: 4096² slide, no nvidia-smi
#   bash benchmarks/gpu_check.sh --batch-sizes 16 64 128 --reader-threads 8 16 --out DIR
#
# Any option is passed on to benchmarks/gpu_check.py (see its --help): --size, --device,
# --precision, --batch-sizes, --reader-threads, --threads, --postproc-workers, --out, --workdir.
# Results: --out (default $OUT where set, else /tmp/gpu_check): summary.json, one run_*.json per
# configuration, nvidia_smi.csv (utilization.gpu and memory.used every 500 ms), nvidia_smi.txt.
# The slide and the engine's outputs go to --workdir (default /tmp/gpu_check_work), not to $OUT.
#
# Environment: the script first checks `python -c "import wsi_pipeline, torch"`. Where torch and
# the dependencies are installed but the package is not, it runs the repo's copy through
# PYTHONPATH (no network needed). Where something is still missing it tries `pip install -e .`
# (needs a package registry; the device machine reaches none, so there the dependencies must be
# preinstalled). On a 16-core H200 host the default run should take about 3-6 minutes: slide
# build ~1 min, end-to-end run (post-processing on all cores) ~1-2 min, inference-only sweep
# runs well under a minute each. Timings of a run are in its JSON; nothing here resets or
# reconfigures the GPU.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$(command -v python || command -v python3)}"
CPU_SMOKE=0
for a in "$@"; do [[ "$a" == "--cpu-smoke" ]] && CPU_SMOKE=1; done
OUT_DIR="${OUT:-/tmp/gpu_check}"
prev=""
for a in "$@"; do [[ "$prev" == "--out" ]] && OUT_DIR="$a"; prev="$a"; done
mkdir -p "$OUT_DIR"

echo "== environment"
date -u
if ! "$PY" -c "import wsi_pipeline, torch" 2>/dev/null; then
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    if "$PY" -c "import wsi_pipeline, torch, zarr, openslide, tifffile" 2>/dev/null; then
        echo "wsi_pipeline not installed: using the repo copy through PYTHONPATH"
    else
        echo "wsi_pipeline or its dependencies missing: pip install -e . (needs a registry)"
        "$PY" -m pip install -e . || { echo "install failed: preinstall the dependencies"; exit 2; }
    fi
fi
"$PY" - <<'EOF'
import platform, torch, wsi_pipeline
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"wsi_pipeline {wsi_pipeline.__version__}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
EOF
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(getconf _NPROCESSORS_ONLN) cores;" \
     "flags: $(grep -m1 -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"

if [[ "$CPU_SMOKE" == 0 ]]; then
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi | tee "$OUT_DIR/nvidia_smi.txt"
    else
        echo "nvidia-smi not found: no GPU here? (use --cpu-smoke for the CPU path)"
    fi
fi

echo "== benchmark"
exec "$PY" benchmarks/gpu_check.py "$@"
