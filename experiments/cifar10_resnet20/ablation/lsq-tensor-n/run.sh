#!/usr/bin/env bash
# run.sh: the study's W4A4 LSQ cell (per-channel, least-squares start, distilled, 15 epochs from lr 0.001,
# seed 1, the study's layer keys) with the layer's weight count in the steps' gradient scale
# (--lsq-grad-scale layer; README.md). From experiments/cifar10_resnet20, with the float model in
# runs/recipe/checkpoint.h5 (cp resume/recipe.h5 runs/recipe/checkpoint.h5 on a new machine); run again, it
# resumes where it stopped. `run.sh w8` runs the W8A8 cell of the probe (2 epochs) on the committed option.
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
main() {
  local name=w4 cell=(--pairs 4/4 --qat-epochs 15 --qat-distill 1)
  if [ "${1:-}" = w8 ]; then name=w8 cell=(--pairs 8/8 --qat-epochs 2); fi
  local args=(sweep runs/recipe/checkpoint.h5 --dataset cifar10 --batch-size 128 --first-last 8
              --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8 --threads 1
              --methods lsq --granularity per-channel --seeds 1 --qat-lr 0.001 --lsq-init mse --lsq-grad-scale layer
              "${cell[@]}" --out "runs/ablation-lsq-tensor-n-$name")
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } |
    tee -a "ablation/lsq-tensor-n/$name.run.log"
}
main "$@"; exit
