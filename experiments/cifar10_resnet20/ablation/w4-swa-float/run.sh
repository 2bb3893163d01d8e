#!/usr/bin/env bash
# ablation/w4-swa-float: does the weight-averaged float model (recipe.sh swa: v2 + 30 averaged epochs) lose less
# to quantization than v2, the study's float model? The same cells from each: PTQ (histogram and min/max,
# per-channel, at W4A8, W4A4 and W3A3: no training, minutes) and the study's W4A4 LSQ cell (as ../lsq-fold/'s
# w4: 15 epochs from lr 0.001, least-squares start, distilled from its own float model, seed 1, one thread).
# README.md says why. Usage, from experiments/cifar10_resnet20, after `recipe.sh swa` has finished (its
# checkpoint in runs/recipe_swa/, or resume/recipe_swa.h5 copied there):
#   bash ablation/w4-swa-float/run.sh ptq    the PTQ cells from both float models
#   bash ablation/w4-swa-float/run.sh w4     the W4A4 LSQ cell from the averaged model (run again: it resumes)
set -euo pipefail
Q="${QATLAB:-../../build/apps/qatlab}"
main() {
  local common=(--dataset cifar10 --batch-size 128 --first-last 8 --layer-bits residual-branches=:8
                --layer-bits stem.conv=8: --layer-bits stage3.2=:8 --threads 1 --granularity per-channel --seeds 1)
    case "${1:-}" in
    ptq)
      local -A floats=([v2]=runs/recipe/checkpoint.h5 [swa-float]=runs/recipe_swa/checkpoint.h5)
      for label in v2 swa-float; do
        local args=(sweep "${floats[$label]}" "${common[@]}" --methods ptq-minmax,ptq-histogram --pairs 4/8,4/4,3/3
                    --out "runs/ablation-ptq-$label")
        { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a ablation/w4-swa-float/ptq.log
        cp "runs/ablation-ptq-$label/results.csv" "ablation/w4-swa-float/ptq-$label.results.csv"
      done
      ;;
    w4)
      local args=(sweep runs/recipe_swa/checkpoint.h5 "${common[@]}" --methods lsq --qat-lr 0.001 --lsq-init mse
                  --pairs 4/4 --qat-epochs 15 --qat-distill 1 --out runs/ablation-w4-swa-float)
      { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a ablation/w4-swa-float/w4.log
      if [ -f runs/ablation-w4-swa-float/results.csv ]; then
        cp runs/ablation-w4-swa-float/results.csv ablation/w4-swa-float/w4.results.csv
      fi
      ;;
    *)
      echo "run.sh: usage: run.sh ptq|w4; got '$*'" >&2
      exit 2
      ;;
  esac
}
main "$@"; exit
