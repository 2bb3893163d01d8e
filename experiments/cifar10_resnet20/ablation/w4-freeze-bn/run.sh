#!/usr/bin/env bash
# ablation/w4-freeze-bn: the study's W4A4 LSQ cell (as ../lsq-fold/'s w4: 15 epochs from lr 0.001, seed 1) with
# batch norm frozen for its last five epochs (--qat-freeze-bn-after 10). README.md says why.
# Usage, from experiments/cifar10_resnet20: bash ablation/w4-freeze-bn/run.sh   (run again: it resumes)
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
main() {
  local args=(sweep runs/recipe/checkpoint.h5 --dataset cifar10 --batch-size 128 --first-last 8
              --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8 --threads 1
              --methods lsq --granularity per-channel --seeds 1 --qat-lr 0.001 --lsq-init mse --pairs 4/4
              --qat-epochs 15 --qat-distill 1 --qat-freeze-bn-after 10 --out runs/ablation-w4-freeze-bn)
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a ablation/w4-freeze-bn/log.txt
}
main "$@"; exit
