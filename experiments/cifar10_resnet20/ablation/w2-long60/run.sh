#!/usr/bin/env bash
# run.sh: the w2 sweep's seed-1 LSQ W2A2 cell (per-channel, no cutout, 8-bit residual stream, weight decay
# 1.25e-4, bounded LSQ steps, full grid, least-squares start, distilled from the float model) fine-tuned
# for 60 epochs instead of 30: lr 0.003 after one warm-up epoch, cosine, batch norm frozen for the last
# third (from epoch 41) as the 30-epoch cell freezes it from epoch 21. README.md here.
#   bash ablation/w2-long60/run.sh   (from experiments/cifar10_resnet20, after study.sh has the float model;
#   run again, it resumes from the cell's last epoch)
#   bash ablation/w2-long60/run.sh save   (keeps the cell in kept/, for the next session)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
out=runs/ablation-w2-long60
cd "$exp"
single_sweep_mode "$out" "${1:-}"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods lsq --granularity per-channel --seeds 1 --pairs 2/2
      --qat-weight-decay 0.000125 --layer-bits residual-sums=:8 --lsq-step-bounds 8 --weight-range full
      --qat-epochs 60 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 40
      --lsq-init mse --qat-distill 1 --augment pad-crop:4,flip)
# The float model's outputs from runs/teacher-cache when up to date (../../teacher_cache.sh): faster, the same.
# shellcheck disable=SC2207
args+=($(teacher_cache_args))
run_sweep "$here/log.txt" "${args[@]}"
cp "$out/results.csv" "$out/table.md" "$here/"
