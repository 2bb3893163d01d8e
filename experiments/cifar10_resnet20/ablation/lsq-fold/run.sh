#!/usr/bin/env bash
# run.sh: the study's LSQ cells at W8A8 (2 epochs) and W4A4 (15 epochs, seed 1) again, with the step
# gradient of folded weights corrected (README.md). From experiments/cifar10_resnet20, with the float
# model in runs/recipe/checkpoint.h5 (cp resume/recipe.h5 runs/recipe/checkpoint.h5 on a new machine).
# Each sweep resumes where it stopped when run again.
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
common=(runs/recipe/checkpoint.h5 --dataset cifar10 --batch-size 128 --first-last 8 --layer-bits residual-branches=:8
        --layer-bits stem.conv=8: --layer-bits stage3.2=:8 --threads 1 --methods lsq --granularity per-channel
        --seeds 1 --qat-lr 0.001 --lsq-init mse)
for name in w8 w4; do
  if [ "$name" = w8 ]; then cell=(--pairs 8/8 --qat-epochs 2); else cell=(--pairs 4/4 --qat-epochs 15 --qat-distill 1); fi
  args=(sweep "${common[@]}" "${cell[@]}" --out "runs/ablation-lsq-fold-$name")
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a "ablation/lsq-fold/$name.log"
done
