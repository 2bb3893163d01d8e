#!/usr/bin/env bash
# run.sh: the study's W4A4 LSQ cell (`../lsq-fold/`'s, 15 epochs from lr 0.001) continued for 10 more epochs
# at the constant rate 0.0005 whose weights, averaged, are the model (--swa-start 15 --swa-lr 0.0005;
# README.md). It goes on from that cell's last checkpoint (`qatlab qat --resume` with the averaging added,
# which ends where the same 25-epoch run from the float model would), one thread as that cell ran, then
# converts the averaged model and evaluates the integer graph and the simulation.
# From experiments/cifar10_resnet20, with runs/recipe/checkpoint.h5 (the float model: cp resume/recipe.h5)
# and the lsq-fold W4A4 cell (`bash ablation/lsq-fold/run.sh w4` makes it on a new machine); run again, it
# resumes where it stopped.
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
main() {
  local cell=runs/ablation-lsq-fold-w4/cells/lsq-per-channel-w4a4-s1/checkpoint.h5 out=runs/ablation-w4-swa
  local args
  if [ -f "$out/checkpoint.h5" ]; then
    args=(qat --resume "$out/checkpoint.h5" --threads 1 --progress plain)
  else
    args=(qat --resume "$cell" --epochs 25 --swa-start 15 --swa-lr 0.0005 --out "$out" --threads 1 --progress plain)
  fi
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1 | grep --line-buffered -v " batch [0-9]*/"; } |
    tee -a ablation/w4-swa/log.txt
  if [ "$("$Q" info "$out/checkpoint.h5" | sed -n 's/^  epochs done *//p')" = 25 ]; then
    for cmd in "convert $out/checkpoint.h5 --overwrite" \
               "eval $out/model.int8.h5 --dataset cifar10 --compare $out/checkpoint.h5 --threads 1"; do
      # shellcheck disable=SC2086
      { echo "# qatlab $cmd"; "$Q" $cmd 2>&1; } | tee -a ablation/w4-swa/log.txt
    done
    cp "$out/metrics.csv" "$out/curve.svg" ablation/w4-swa/
  fi
}
main "$@"; exit
