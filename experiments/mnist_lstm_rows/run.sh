#!/usr/bin/env bash
# run.sh: the row-by-row LSTM (`lstm-rows`: MNIST as 28 steps of 28 pixels, hidden 128, linear head) from
# float training through QAT to integer graphs, and dynamic quantization of the float model.
#   float: 5 epochs, Adam lr 0.002
#   W8A8 QAT: 1 epoch, Adam lr 0.0002 -> convert -> integer graph vs simulation and exact mode
#   W4A4 QAT (head 8-bit): 2 epochs, same optimizer -> convert -> integer graph
#   dynamic int8 (weights int8, activations quantized per batch at run time) of the float model
#   bench: float vs the W8A8 integer graph
# Usage: bash experiments/mnist_lstm_rows/run.sh   (from the repository root, after apps/scripts/build.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="$here/../../build/apps/qatlab"
runs="$here/runs"
rm -rf "$runs"
mkdir -p "$runs"
common=(--threads 2 --progress plain)
{
  "$Q" train --model lstm-rows --dataset mnist --epochs 5 --optimizer adam --lr 0.002 "${common[@]}" --out "$runs/float"
  "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 1 --optimizer adam --lr 0.0002 "${common[@]}" --out "$runs/w8a8"
  "$Q" convert "$runs/w8a8/checkpoint.h5"
  "$Q" eval "$runs/w8a8/model.int8.h5" --compare "$runs/w8a8/checkpoint.h5" --threads 2
  "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 2 --optimizer adam --lr 0.0002 --wbits 4 --abits 4 \
    --layer-bits head=8:8 "${common[@]}" --out "$runs/w4a4"
  "$Q" convert "$runs/w4a4/checkpoint.h5"
  "$Q" eval "$runs/w4a4/model.int8.h5" --compare "$runs/w4a4/checkpoint.h5" --threads 2
  "$Q" ptq --dynamic "$runs/float/checkpoint.h5" --threads 2 --out "$runs/dynamic"
  "$Q" bench --float "$runs/float/checkpoint.h5" --int8 "$runs/w8a8/model.int8.h5" --threads 2
  ls -l "$runs/float/checkpoint.h5" "$runs/w8a8/model.int8.h5" "$runs/w4a4/model.int8.h5" "$runs"/dynamic/*.h5
} 2>&1 | grep -v " batch [0-9]*/" | tee "$here/run.log"
for r in float w8a8 w4a4; do cp "$runs/$r/metrics.csv" "$here/$r.metrics.csv"; done
rm -rf "$runs"
