#!/usr/bin/env bash
# run.sh: the study's W8A8 per-channel cells (sweeps w8 and w8-s2: min/max QAT, LSQ and PACT, 2 epochs at lr
# 0.001, batch norm frozen throughout, seeds 1 and 2) distilled from the float model (--qat-distill 1, the
# teacher's outputs alone at temperature 1, as the 4-, 3- and 2-bit cells); README.md here.
#   bash ablation/w8-distill/run.sh    (from experiments/cifar10_resnet20, after study.sh has the float model;
#   run again, it resumes: finished cells are reused, a cell in training goes on from its last epoch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../common.sh
source "$here/../common.sh"
out=runs/ablation-w8-distill
cd "$exp"
# A later session's machine may not have runs/: the cells kept by the last session go back first.
restore_cells "$here/kept" "$out"
args=(sweep runs/recipe_swa/checkpoint.h5 --out "$out" --dataset cifar10 --batch-size 128 "${study_layers[@]}"
      --threads "${THREADS:-1}" --methods qat-minmax,lsq,pact --pairs 8/8 --granularity per-channel --seeds 2
      --qat-epochs 2 --qat-lr 0.001 --qat-freeze-bn-after 0 --lsq-init mse --qat-distill 1)
{ echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1; } | tee -a "$here/log.txt"
cp "$out/results.csv" "$out/cells.csv" "$out/table.md" "$here/"
