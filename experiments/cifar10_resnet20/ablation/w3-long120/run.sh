#!/usr/bin/env bash
# run.sh: the w3 sweep's seed-1 LSQ W3A3 cell (per-channel, mid-rise grid, no cutout, 8-bit residual stream,
# weight decay 2.5e-4, bounded LSQ steps, least-squares start, distilled from the float model, lr 0.003 after
# one warm-up epoch, cosine) fine-tuned for 120 epochs instead of 60, batch norm frozen for the last 40 (from
# epoch 81; the 60-epoch cell freezes it for its last 20). README.md here.
#   bash ablation/w3-long120/run.sh   (from experiments/cifar10_resnet20, after study.sh has the float model;
#   run again, it resumes from the cell's last epoch)
#   bash ablation/w3-long120/run.sh save   (keeps the cell in kept/, for the next session)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
out=runs/ablation-w3-long120
cd "$exp"
single_sweep_mode "$out" "${1:-}"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods lsq --granularity per-channel --seeds 1 --pairs 3/3
      --qat-weight-decay 0.00025 --layer-bits residual-sums=:8 --lsq-step-bounds 8 --weight-range mid-rise
      --qat-epochs 120 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 80
      --lsq-init mse --qat-distill 1 --augment pad-crop:4,flip)
# The float model's outputs from runs/teacher-cache when up to date (../../teacher_cache.sh): faster, the same.
# shellcheck disable=SC2207
args+=($(teacher_cache_args))
run_sweep "$here/log.txt" "${args[@]}"
cp "$out/results.csv" "$out/table.md" "$here/"
