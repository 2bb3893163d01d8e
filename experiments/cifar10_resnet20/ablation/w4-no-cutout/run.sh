#!/usr/bin/env bash
# run.sh: the study's W4A4 LSQ cell (per-channel, least-squares start, distilled, 15 epochs from lr 0.001,
# seed 1, the study's layer keys) trained without cutout: random crop and flip only (README.md). From
# experiments/cifar10_resnet20, with the float model in runs/recipe/checkpoint.h5 (cp resume/recipe.h5
# runs/recipe/checkpoint.h5 on a new machine); run again, it resumes where it stopped.
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
main() {
  local args=(sweep runs/recipe/checkpoint.h5 --dataset cifar10 --batch-size 128 --first-last 8
              --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8 --threads 1
              --methods lsq --granularity per-channel --seeds 1 --qat-lr 0.001 --lsq-init mse --pairs 4/4
              --qat-epochs 15 --qat-distill 1 --augment pad-crop:4,flip --out runs/ablation-w4-no-cutout)
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a ablation/w4-no-cutout/log.txt
}
main "$@"; exit
