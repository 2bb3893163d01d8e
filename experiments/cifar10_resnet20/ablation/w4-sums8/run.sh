#!/usr/bin/env bash
# run.sh: the study's W4A4 LSQ cell (per-channel, 15 epochs, distilled, seed 1) with every residual
# block's sum at 8 bits (README.md). From experiments/cifar10_resnet20, with the float model in
# runs/recipe/checkpoint.h5 (cp resume/recipe.h5 runs/recipe/checkpoint.h5 on a new machine); run again,
# it resumes where it stopped.
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
main() {
  local sums=()
  for s in 1 2 3; do for b in 0 1 2; do sums+=(--layer-bits "stage$s.$b=:8"); done; done
  local args=(sweep runs/recipe/checkpoint.h5 --dataset cifar10 --batch-size 128 --first-last 8
              --layer-bits residual-branches=:8 --layer-bits stem.conv=8: "${sums[@]}" --threads 1 --methods lsq
              --granularity per-channel --seeds 1 --qat-lr 0.001 --lsq-init mse --pairs 4/4 --qat-epochs 15
              --qat-distill 1 --out runs/ablation-w4-sums8)
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a ablation/w4-sums8/log.txt
}
main "$@"; exit
