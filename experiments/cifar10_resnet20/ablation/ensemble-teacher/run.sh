#!/usr/bin/env bash
# run.sh: the w4 sweep's LSQ W4A4 cells (per-channel, 30 epochs from lr 0.003, batch norm frozen for the
# last 10, no cutout, 8-bit residual stream, least-squares start, distilled) with a stronger teacher: the
# ensemble of two float ResNet-20s trained apart (the study's float model, runs/recipe_swa, and the recipe's
# distilled run v3, resume/recipe_kd.h5; their logits averaged: 90.77 % where the study's float model alone,
# the teacher so far, scores 90.36 %). README.md here.
#   bash ablation/ensemble-teacher/run.sh 1|2   (the seed; from experiments/cifar10_resnet20, after study.sh
#   has the float model; run again, it resumes from the cell's last epoch; the two seeds can run at once)
#   bash ablation/ensemble-teacher/run.sh save   (keeps the cells in kept/s1, kept/s2, for the next session)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
cd "$exp"
seed_sweep_mode runs/ablation-ensemble-teacher "${1:-}"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods lsq --pairs 4/4 --granularity per-channel --seed "$seed" --seeds 1
      --qat-epochs 30 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 20
      --lsq-init mse --qat-distill 1 --layer-bits residual-sums=:8 --augment pad-crop:4,flip
      --qat-teacher runs/recipe_swa/checkpoint.h5 --qat-teacher resume/recipe_kd.h5)
run_sweep "$here/log-s$seed.txt" "${args[@]}"
cp "$out/results.csv" "$here/results-s$seed.csv"
cp "$out/table.md" "$here/table-s$seed.md"
