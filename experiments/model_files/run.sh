#!/usr/bin/env bash
# run.sh: the two networks shipped as description files (nn/models/mobilenet-cifar.yaml,
# nn/models/vgg-small.yaml) trained on CIFAR-10, QAT-ed at W8A8 (min/max observers) and W4A4 (LSQ),
# converted, and each integer graph compared with its QAT simulation on the whole test set
# (`eval --compare`: top-1 agreement, output codes, and exact mode bit for bit).
#
# The schedules are short, for the 2-core machine: they show the networks going through the whole
# pipeline, not the accuracy a long schedule reaches (see results.md). Each stage is skipped when its
# output exists and training resumes from its last checkpoint, so an interrupted run continues where it
# stopped: run the script again.
# Usage: bash experiments/model_files/run.sh [NETWORK ...]   (from the repository root, after
# apps/scripts/build.sh; CIFAR-10 in the data directory, see the README's Data section)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
runs="$here/runs"
mkdir -p "$runs"
nets=("$@")
if [ ${#nets[@]} -eq 0 ]; then nets=(mobilenet-cifar vgg-small); fi

# NETWORK: float epochs, QAT epochs, training images (0 = all 50,000), lr
declare -A plan=([mobilenet-cifar]="4 1 0 0.05" [vgg-small]="4 1 20000 0.02")

log() { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): $*" | tee -a "$here/run.log"; }
# train_stage DIR ARGS...: trains into DIR, or resumes DIR's checkpoint, unless DIR's run is complete.
train_stage() {
  local dir="$1"
  shift
  if [ -f "$dir/summary.json" ]; then return 0; fi
  if [ -f "$dir/checkpoint.h5" ]; then
    log "qatlab ${1} --resume $dir/checkpoint.h5"
    "$Q" "$1" --resume "$dir/checkpoint.h5" --progress none | tee -a "$here/run.log"
  else
    log "qatlab $* --out $dir"
    "$Q" "$@" --out "$dir" --progress none | tee -a "$here/run.log"
  fi
}

for net in "${nets[@]}"; do
  read -r epochs qat_epochs limit lr <<< "${plan[$net]}"
  common=(--dataset cifar10 --batch-size 128 --train-limit "$limit" --seed 1)
  train_stage "$runs/$net-float" train --model "$net" "${common[@]}" --epochs "$epochs" --optimizer sgd \
    --lr "$lr" --momentum 0.9 --weight-decay 5e-4 --schedule cosine
  for q in "w8a8 --wbits 8 --abits 8" "w4a4 --wbits 4 --abits 4 --wquant lsq --aquant lsq"; do
    read -r tag qargs <<< "$q"
    # shellcheck disable=SC2086
    train_stage "$runs/$net-$tag" qat --from "$runs/$net-float/checkpoint.h5" "${common[@]}" --epochs "$qat_epochs" \
      --lr "$(awk -v lr="$lr" 'BEGIN { print lr / 10 }')" --schedule cosine $qargs
    if [ ! -f "$runs/$net-$tag/model.int8.h5" ]; then
      log "qatlab convert $runs/$net-$tag/checkpoint.h5"
      "$Q" convert "$runs/$net-$tag/checkpoint.h5" | tee -a "$here/run.log"
    fi
    log "qatlab eval $runs/$net-$tag/model.int8.h5 --compare $runs/$net-$tag/checkpoint.h5"
    "$Q" eval "$runs/$net-$tag/model.int8.h5" --compare "$runs/$net-$tag/checkpoint.h5" |
      tee "$here/$net-$tag.eval.txt" | tee -a "$here/run.log"
  done
  cp "$runs/$net-float/metrics.csv" "$here/$net-float.metrics.csv"
done
