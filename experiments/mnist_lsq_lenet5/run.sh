#!/usr/bin/env bash
# run.sh: LeNet-5 on MNIST with learned step sizes (LSQ, weights and activations), first and last layer
# at 8 bits: W4A4 and W2A2 QAT (2 epochs each) from a 3-epoch float model, converted to integer graphs
# and evaluated against their simulation. 2 threads.
# Usage: bash experiments/mnist_lsq_lenet5/run.sh   (from the repository root, after apps/scripts/build.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="$here/../../build/apps/qatlab"
runs="$here/runs"
rm -rf "$runs"
mkdir -p "$runs"
common=(--threads 2 --progress plain)
policy=(--layer-bits features.0=8:8 --layer-bits classifier.4=8:8)
{
  "$Q" train --model lenet5 --dataset mnist --epochs 3 "${common[@]}" --out "$runs/float"
  for wa in 4 2; do
    "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 2 --lr 0.01 --wbits "$wa" --abits "$wa" --wquant lsq \
      --aquant lsq "${policy[@]}" "${common[@]}" --out "$runs/w${wa}a${wa}"
    "$Q" convert "$runs/w${wa}a${wa}/checkpoint.h5"
    "$Q" eval "$runs/w${wa}a${wa}/model.int8.h5" --compare "$runs/w${wa}a${wa}/checkpoint.h5" --threads 2
  done
} 2>&1 | grep -v " batch [0-9]*/" | tee "$here/run.log"
for r in float w4a4 w2a2; do cp "$runs/$r/metrics.csv" "$here/$r.metrics.csv"; done
rm -rf "$runs"
