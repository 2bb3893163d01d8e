#!/usr/bin/env bash
# run.sh SEED: the w4 sweep's LSQ W4A4 cell of seed SEED (per-channel, no cutout, 8-bit residual stream,
# least-squares start, distilled from the float model, 30 epochs) with its weights on the mid-rise grid
# (--weight-range mid-rise: the odd codes of [-15, 15], levels +-1/2 ... +-15/2 steps, no 0) instead of the
# narrow grid [-7, 7]. README.md here.
#   bash ablation/w4-mid-rise/run.sh 1|2   (from experiments/cifar10_resnet20, after study.sh has the float
#   model; run again, it resumes from the cell's last epoch)
#   bash ablation/w4-mid-rise/run.sh save   (keeps both cells in kept/, for the next session)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
cd "$exp"
seed_sweep_mode runs/ablation-w4-mid-rise "${1:-}"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods lsq --pairs 4/4 --granularity per-channel --seed "$seed" --seeds 1
      --qat-epochs 30 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 20
      --lsq-init mse --qat-distill 1 --layer-bits residual-sums=:8 --augment pad-crop:4,flip
      --weight-range mid-rise)
# The float model's outputs from runs/teacher-cache when up to date (../../teacher_cache.sh): faster, the same.
# shellcheck disable=SC2207
args+=($(teacher_cache_args))
run_sweep "$here/log-s$seed.txt" "${args[@]}"
cp "$out/results.csv" "$here/results-s$seed.csv"
cp "$out/table.md" "$here/table-s$seed.md"
