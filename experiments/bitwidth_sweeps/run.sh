#!/usr/bin/env bash
# run.sh: the accuracy-vs-bitwidth studies: `qatlab sweep` with its default grid (W/A 8/8, 6/6, 4/4,
# 3/3, 2/2, 4/8, 2/8; methods ptq-minmax, ptq-histogram, qat-minmax, lsq, pact; per-tensor weights;
# first and last layer 8-bit), 2 seeds, a 3-epoch float model per seed, 2 QAT epochs per cell, 2 threads.
# The MLP has only two layers (784-256-10), so its study and mnist-lenet5-all put every layer at W/A.
# Usage: bash experiments/bitwidth_sweeps/run.sh [mnist-lenet5] [mnist-lenet5-all] [mnist-mlp] [fashion-lenet5]
#        (from the repository root, after apps/scripts/build.sh; no argument runs all three)
# Fashion-MNIST is read from $FASHION_MNIST_DIR (default /usr/share/datasets/fashion-mnist).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="$here/../../build/apps/qatlab"
fashion_dir="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(mnist-lenet5 mnist-lenet5-all mnist-mlp fashion-lenet5)
for study in "${studies[@]}"; do
  case "$study" in
    mnist-lenet5) args=(--model lenet5 --dataset mnist) ;;
    mnist-lenet5-all) args=(--model lenet5 --dataset mnist --first-last same) ;;
    mnist-mlp) args=(--model mlp --dataset mnist --first-last same) ;;
    fashion-lenet5) args=(--model lenet5 --dataset fashion-mnist --data-dir "$fashion_dir") ;;
    *) echo "unknown study '$study' (mnist-lenet5, mnist-lenet5-all, mnist-mlp, fashion-lenet5)" >&2; exit 2 ;;
  esac
  runs="$here/runs/$study"   # models and per-cell logs (not committed); rerun to resume
  mkdir -p "$here/$study"
  {
    echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nproc) cores: $Q sweep ${args[*]} --seeds 2 --threads 2 --out $runs"
    start=$(date +%s)
    "$Q" sweep "${args[@]}" --seeds 2 --threads 2 --out "$runs"
    echo "# wall time $(( $(date +%s) - start )) s"
  } 2>&1 | tee "$here/$study/sweep.log"
  cp "$runs"/results.csv "$runs"/results.json "$runs"/cells.csv "$runs"/*.svg "$here/$study/"
  if [ "$study" = mnist-lenet5 ]; then  # quant/README.md's worked example comes from this model
    "$Q" inspect "$runs/cells/qat-minmax-per-tensor-w8a8-s1/checkpoint.h5" --explain body.features.4 --at 2 \
      --threads 2 > "$here/$study/explain_features4.txt"
    # Integer graph vs simulation (float and exact mode) for three of its models.
    for cell in qat-minmax-per-tensor-w8a8-s1 lsq-per-tensor-w4a4-s1 lsq-per-tensor-w2a2-s1; do
      "$Q" eval "$runs/cells/$cell/model.int8.h5" --compare "$runs/cells/$cell/checkpoint.h5" --threads 2
    done > "$here/$study/agreement.txt"
  fi
done
