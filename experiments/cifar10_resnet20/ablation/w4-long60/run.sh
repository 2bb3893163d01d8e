#!/usr/bin/env bash
# run.sh SEED: the w4 sweep's LSQ W4A4 cell of seed SEED (per-channel, narrow grid, no cutout, 8-bit residual
# stream, least-squares start, distilled from the float model) fine-tuned for 60 epochs instead of 30: lr
# 0.003 after one warm-up epoch, cosine, batch norm frozen for the last 20 (from epoch 41). README.md here.
#   bash ablation/w4-long60/run.sh 1|2   (from experiments/cifar10_resnet20, after study.sh has the float
#   model; run again, it resumes from the cell's last epoch)
#   bash ablation/w4-long60/run.sh save   (keeps both cells in kept/, for the next session)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
cd "$exp"
seed_sweep_mode runs/ablation-w4-long60 "${1:-}"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods lsq --pairs 4/4 --granularity per-channel --seed "$seed" --seeds 1
      --qat-epochs 60 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 40
      --lsq-init mse --qat-distill 1 --layer-bits residual-sums=:8 --augment pad-crop:4,flip)
# The float model's outputs from runs/teacher-cache when up to date (../../teacher_cache.sh): faster, the same.
# shellcheck disable=SC2207
args+=($(teacher_cache_args))
run_sweep "$here/log-s$seed.txt" "${args[@]}"
cp "$out/results.csv" "$here/results-s$seed.csv"
cp "$out/table.md" "$here/table-s$seed.md"
