#!/usr/bin/env bash
# run.sh: the study's W8A8 and W4A8 per-channel LSQ and PACT cells (sweep w8: 2 epochs at lr 0.001) with batch norm
# frozen from the start (--qat-freeze-bn-after 0); README.md here.
#   bash ablation/w8-freeze-bn/run.sh    (from experiments/cifar10_resnet20, after study.sh has the float model)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exp="$here/../.."
Q="${QATLAB:-$exp/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
cd "$exp"
"$Q" sweep runs/recipe_swa/checkpoint.h5 --out runs/ablation-w8-freeze-bn --dataset cifar10 --batch-size 128 \
  --first-last 8 --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8 \
  --threads "${THREADS:-1}" --methods lsq,pact --pairs 8/8,4/8 --granularity per-channel --seeds 1 --qat-epochs 2 \
  --qat-lr 0.001 --lsq-init mse --qat-freeze-bn-after 0 2>&1 | tee -a "$here/log.txt"
cp runs/ablation-w8-freeze-bn/results.csv runs/ablation-w8-freeze-bn/table.md "$here/"
