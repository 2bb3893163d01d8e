#!/usr/bin/env bash
# run.sh: LeNet-5 on MNIST: float (3 epochs) -> W8A8 QAT (1 epoch) and W4A4 QAT with first and last
# layer at 8 bits (2 epochs) -> integer graphs; accuracy of simulation vs integer engine, agreement,
# exact-mode bit identity, file sizes, and the float-vs-integer benchmark. 2 threads.
# Usage: bash experiments/mnist_qat_lenet5/run.sh   (from the repository root, after apps/scripts/build.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="$here/../../build/apps/qatlab"
runs="$here/runs"
rm -rf "$runs"
mkdir -p "$runs"
common=(--threads 2 --progress plain)
{
  "$Q" train --model lenet5 --dataset mnist --epochs 3 "${common[@]}" --out "$runs/float"
  "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 1 --lr 0.01 "${common[@]}" --out "$runs/w8a8"
  "$Q" convert "$runs/w8a8/checkpoint.h5"
  "$Q" eval "$runs/w8a8/model.int8.h5" --compare "$runs/w8a8/checkpoint.h5" --threads 2
  "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 2 --lr 0.01 --wbits 4 --abits 4 \
    --layer-bits features.0=8:8 --layer-bits classifier.4=8:8 "${common[@]}" --out "$runs/w4a4"
  "$Q" convert "$runs/w4a4/checkpoint.h5"
  "$Q" eval "$runs/w4a4/model.int8.h5" --compare "$runs/w4a4/checkpoint.h5" --threads 2
  "$Q" bench --float "$runs/float/checkpoint.h5" --int8 "$runs/w8a8/model.int8.h5" --threads 2
} 2>&1 | grep -v " batch [0-9]*/" | tee "$here/run.log"
for r in float w8a8 w4a4; do cp "$runs/$r/metrics.csv" "$here/$r.metrics.csv"; done
ls -l "$runs"/*/checkpoint.h5 "$runs"/*/model.int8.h5 | awk '{print $5, $9}' | sed "s|$runs/||" > "$here/file_sizes.txt"
rm -rf "$runs"
