#!/usr/bin/env bash
# run.sh: a study cell trained without cutout (random crop and flip only), everything else the study's:
#   w4   the first W4A4 cell of sweep w4 (LSQ, per-channel weights, seed 1, 30 epochs from lr 0.003, batch
#        norm frozen for the last 10, least-squares start, distilled from the float model)
#   w2   the first W2A2 cell of sweep w2 (the same, weight decay 1.25e-4)
#   w2-sums8  w2 with every residual block's sum at 8 bits (an upper bound for a residual stream kept at 8
#        bits: it also gives each block's first conv 8-bit inputs)
#   w2-stream8, w4-stream8  w2 and w4 with the residual stream at 8 bits (residual-sums=:8), requantized
#        to A bits for the convs that read it
#   w2-stream8-bounds  w2-stream8 with LSQ's weight steps bounded (--lsq-step-bounds 8)
#   w2-stream8-bounds-full  w2-stream8-bounds with four-level 2-bit weights (--weight-range full, [-2, 1])
#   w4-stream8-bounds-full  w4-stream8 with the w3 and w2 sweeps' LSQ step bounds and full grid ([-8, 7])
# README.md here.
#   bash ablation/no-cutout/run.sh w4|w2|w2-sums8|w2-stream8|w4-stream8|w2-stream8-bounds|w2-stream8-bounds-full|w4-stream8-bounds-full   (from experiments/cifar10_resnet20, after study.sh has the float
#   model; run again, it resumes from the cell's last epoch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exp="$here/../.."
Q="${QATLAB:-$exp/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
case "${1:-}" in
  w4) cell=(--pairs 4/4) ;;
  w2) cell=(--pairs 2/2 --qat-weight-decay 0.000125) ;;
  w2-stream8|w4-stream8)
    # The residual stream at 8 bits, requantized to A bits where a conv reads it (what study.sh's w3 and w2
    # sweeps now use): the integer graph the w2-sums8 bound was measured for.
    if [ "$1" = w2-stream8 ]; then cell=(--pairs 2/2 --qat-weight-decay 0.000125); else cell=(--pairs 4/4); fi
    cell+=(--layer-bits residual-sums=:8) ;;
  w2-stream8-bounds)
    # w2-stream8 with LSQ's weight steps bounded (--lsq-step-bounds 8): no channel dies at the floor.
    cell=(--pairs 2/2 --qat-weight-decay 0.000125 --layer-bits residual-sums=:8 --lsq-step-bounds 8) ;;
  w2-stream8-bounds-full)
    # ... and the 2-bit weights on four levels, as LSQ's and DoReFa's: [-2, 1] instead of [-1, 1].
    cell=(--pairs 2/2 --qat-weight-decay 0.000125 --layer-bits residual-sums=:8 --lsq-step-bounds 8
          --weight-range full) ;;
  w4-stream8-bounds-full)
    # The W4A4 cell with what the 3- and 2-bit cells now have: bounded steps and the full grid, [-8, 7].
    cell=(--pairs 4/4 --layer-bits residual-sums=:8 --lsq-step-bounds 8 --weight-range full) ;;
  w2-sums8)
    cell=(--pairs 2/2 --qat-weight-decay 0.000125)
    for block in stage1.0 stage1.1 stage1.2 stage2.0 stage2.1 stage2.2 stage3.0 stage3.1; do
      cell+=(--layer-bits "$block=:8")
    done ;;
  *) echo "usage: bash ablation/no-cutout/run.sh w4|w2|w2-sums8|w2-stream8|w4-stream8|w2-stream8-bounds|w2-stream8-bounds-full|w4-stream8-bounds-full" >&2; exit 2 ;;
esac
out="runs/ablation-$1-no-cutout"
cd "$exp"
mkdir -p "$out"
if [ -d "$here/kept/$1/cells" ]; then cp -rn "$here/kept/$1/cells" "$out/"; fi
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128
      --first-last 8 --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8
      --threads "${THREADS:-1}" --methods lsq --granularity per-channel --seeds 1 "${cell[@]}"
      --qat-epochs 30 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 20
      --lsq-init mse --qat-distill 1 --augment pad-crop:4,flip)
{ echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a "$here/log-$1.txt"
cp "$out/results.csv" "$here/results-$1.csv"
cp "$out/table.md" "$here/table-$1.md"
