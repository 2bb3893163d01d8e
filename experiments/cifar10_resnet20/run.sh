#!/usr/bin/env bash
# run.sh: ResNet-20 (He et al.'s CIFAR ResNet: 3 stages of 3 basic blocks, 16/32/64 channels) on CIFAR-10,
# from float training through QAT to integer graphs.
#   float: 20 epochs, batch 128, SGD Nesterov momentum 0.9, lr 0.1 with 1 warm-up epoch then cosine,
#          weight decay 5e-4; augmentation (4-pixel-padded random crop, horizontal flip) is the CIFAR default
#   W8A8 QAT (min/max EMA observers, per-channel weights): 1 epoch from the float model -> convert ->
#          integer graph vs its simulation and exact mode
#   W4A4 QAT (LSQ weights and activations; stem conv and fc 8-bit): 2 epochs -> convert -> the same
#   bench: the float model vs the W8A8 integer graph
# Usage: bash experiments/cifar10_resnet20/run.sh [float|qat|convert|all]   (default all; from the repository root,
# after apps/scripts/build.sh; CIFAR-10 in ~/.cache/qatlab, see the README's Data section)
# The float stage takes about 90 minutes on 2 cores; `qat` (about 25 minutes) reuses runs/float/checkpoint.h5
# and ends with `convert`: convert, evaluate against the simulation and bench the QAT checkpoints (qat.log,
# convert.log).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"  # QATLAB=path: another build of the binary
runs="$here/runs"
stage="${1:-all}"
common=(--dataset cifar10 --threads 2 --progress plain --batch-size 128 --optimizer sgd --nesterov --momentum 0.9
  --weight-decay 5e-4 --schedule cosine)
quiet() { grep -v " batch [0-9]*/"; }

if [ "$stage" = float ] || [ "$stage" = all ]; then
  rm -rf "$runs/float"
  mkdir -p "$runs"
  /usr/bin/time -f "wall %e s" "$Q" train --model resnet20 --epochs 20 --lr 0.1 --warmup-epochs 1 --seed 1 \
    "${common[@]}" --out "$runs/float" 2>&1 | quiet | tee "$here/float.log"
  cp "$runs/float/metrics.csv" "$here/float.metrics.csv"
  cp "$runs/float/curve.svg" "$here/float.curve.svg"
fi

if [ "$stage" = qat ] || [ "$stage" = all ]; then
  float="$runs/float/checkpoint.h5"
  [ -f "$float" ] || { echo "run.sh: $float is missing: run the float stage first" >&2; exit 1; }
  rm -rf "$runs/w8a8" "$runs/w4a4"
  {
    "$Q" qat --from "$float" --epochs 1 --lr 0.002 "${common[@]}" --out "$runs/w8a8"
    "$Q" qat --from "$float" --epochs 2 --lr 0.01 --wbits 4 --abits 4 --wquant lsq --aquant lsq \
      --layer-bits stem.conv=8:8 --layer-bits fc=8:8 "${common[@]}" --out "$runs/w4a4"
  } 2>&1 | quiet | tee "$here/qat.log"
  for r in w8a8 w4a4; do cp "$runs/$r/metrics.csv" "$here/$r.metrics.csv"; cp "$runs/$r/curve.svg" "$here/$r.curve.svg"; done
fi

if [ "$stage" = convert ] || [ "$stage" = qat ] || [ "$stage" = all ]; then
  float="$runs/float/checkpoint.h5"
  {
    for r in w8a8 w4a4; do
      "$Q" convert "$runs/$r/checkpoint.h5"
      "$Q" eval "$runs/$r/model.int8.h5" --compare "$runs/$r/checkpoint.h5" --threads 2
    done
    "$Q" bench --float "$float" --int8 "$runs/w8a8/model.int8.h5" --threads 2
    ls -l "$float" "$runs/w8a8/model.int8.h5" "$runs/w4a4/model.int8.h5"
  } 2>&1 | tee "$here/convert.log"
fi
