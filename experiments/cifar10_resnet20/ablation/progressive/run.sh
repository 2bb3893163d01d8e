#!/usr/bin/env bash
# run.sh: progressive quantization at W2A2. The w2 sweep's seed-1 LSQ W2A2 cell (study.sh: 30 epochs from lr
# 0.003, batch norm frozen for the last 10, no cutout, 8-bit residual stream, weight decay 1.25e-4, bounded
# LSQ steps, full grid, distilled from the float model) started from the finished W4A4 LSQ cell of seed 1
# (sweep w4, 89.95 %) instead of from the float model (`sweep --qat-start runs/study-w4`); README.md here.
#   bash ablation/progressive/run.sh   (from experiments/cifar10_resnet20, after study.sh has the float
#   model; run again, it resumes from the cell's last epoch)
#   bash ablation/progressive/run.sh save   (keeps the cell in training in kept/, for the next session)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
out=runs/ablation-progressive-w2
start=runs/study-w4/cells/lsq-per-channel-w4a4-s1
cd "$exp"
if [ "${1:-}" = save ]; then keep_cells "$out" "$here/kept"; exit 0; fi
# A later session's machine may not have runs/: the start sweep comes back from study/ (its results) and
# the start cell's checkpoint from here; the cell in training from kept/.
if [ ! -d runs/study-w4 ]; then mkdir -p runs && cp -r study/study-w4 runs/; fi
if [ ! -f "$start/checkpoint.h5" ]; then cp "$here/start/lsq-per-channel-w4a4-s1.h5" "$start/checkpoint.h5"; fi
restore_cells "$here/kept" "$out"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods lsq --granularity per-channel --seeds 1 --pairs 2/2
      --qat-weight-decay 0.000125 --layer-bits residual-sums=:8 --lsq-step-bounds 8 --weight-range full
      --qat-epochs 30 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 20
      --lsq-init mse --qat-distill 1 --augment pad-crop:4,flip --qat-start runs/study-w4)
{ echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a "$here/log.txt"
cp "$out/results.csv" "$out/table.md" "$here/"
