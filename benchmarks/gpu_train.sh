#!/usr/bin/env bash
# Train the full width-64 configuration on a lent GPU within a time budget, then export fp16
# weights and print the validation history: the device minutes go to training, not to setup.
#   bash benchmarks/gpu_train.sh [MINUTES] [extra `wsi-pipeline train` options]
# Tested on CPU with a tiny run (a few steps, no GPU needed):
#   bash benchmarks/gpu_train.sh 3 --device cpu --epochs 1 --max-steps-per-epoch 2 --out-dir /tmp/gpu_smoke
# Writes runs/full_mix/ (or --out-dir) and, in $OUT when set (the device tool's output folder),
# history.csv, curves.png and full_mix_best_fp16.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-8}"; shift || true
out_dir="runs/full_mix"
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--out-dir" ]]; then j=$((i + 1)); out_dir="${!j}"; fi
done
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
# SIGINT after the budget: train() has saved last.pt/best.pt after every finished epoch.
timeout --signal=INT "$((minutes * 60))" \
  python -c "from wsi_pipeline.cli import main; main()" train --config configs/train_full_mix.yaml "$@" || true
dest="${OUT:-$out_dir}"
mkdir -p "$dest"
if [[ -f "$out_dir/best.pt" ]]; then
  python -c "from wsi_pipeline.cli import main; main()" export-model "$out_dir/best.pt" "$dest/full_mix_best_fp16.pt"
fi
cp "$out_dir/history.csv" "$out_dir/curves.png" "$dest/" 2>/dev/null || true
column -s, -t < "$out_dir/history.csv" | cut -c1-200 || true
