#!/usr/bin/env bash
# run.sh: the speed figures of issue "compute-bound speed", measured with `qatlab bench` on this machine:
#   train_<model>.log  float vs QAT training steps (bench --train), per layer and per op
#   infer_<model>.log  float vs integer inference (bench --float --int8), shares of the measured peaks
#   infer_resnet20_avx2.log  the same on the AVX2 integer kernels (where the CPU has AVX2)
# The models for the inference bench are trained briefly on a subset (speed does not depend on accuracy).
# Usage: bash experiments/speed/run.sh   (from the repository root, after apps/scripts/build.sh; MNIST is
# fetched on first use, CIFAR-10 must be in the data directory, see the README's Data section).
# Run it on a quiet machine: no build, test or other job at the same time (2 cores are easily shared).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
runs="$here/runs"
rm -rf "$runs"
mkdir -p "$runs"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
stamp() { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $cpu, $(nproc) cores; command: $*"; }

run_logged() {  # run_logged LOG COMMAND...: the command's output, headed by its stamp, into LOG
  local log="$1"
  shift
  { stamp "$@"; "$@"; } 2>&1 | tee "$here/$log"
}

run_logged train_resnet20.log "$Q" bench --train resnet20 --dataset cifar10 --batch-size 128 --steps 30
run_logged train_lenet5.log "$Q" bench --train lenet5 --dataset mnist --batch-size 64 --steps 300

for spec in "resnet20 cifar10 2560" "lenet5 mnist 6400"; do
  read -r model dataset limit <<< "$spec"
  common=(--dataset "$dataset" --epochs 1 --batch-size 64 --train-limit "$limit" --test-limit 512 --progress none)
  "$Q" train --model "$model" "${common[@]}" --out "$runs/$model-float" > /dev/null
  "$Q" qat --from "$runs/$model-float/checkpoint.h5" "${common[@]}" --out "$runs/$model-qat" > /dev/null
  "$Q" convert "$runs/$model-qat/checkpoint.h5" > /dev/null
  run_logged "infer_$model.log" "$Q" bench --float "$runs/$model-float/checkpoint.h5" \
    --int8 "$runs/$model-qat/model.int8.h5" --seconds 3
done
# The AVX2 integer kernels on the same machine (what an AVX2-only CPU runs), against their own peak
# (vpmaddwd + vpaddd): a stand-in for an AVX2-only machine, whose clock and caches differ.
if grep -qw avx2 /proc/cpuinfo; then
  run_logged infer_resnet20_avx2.log "$Q" bench --float "$runs/resnet20-float/checkpoint.h5" \
    --int8 "$runs/resnet20-qat/model.int8.h5" --kernel avx2 --seconds 3
fi
