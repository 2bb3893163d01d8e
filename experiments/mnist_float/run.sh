#!/usr/bin/env bash
# run.sh: float baselines on MNIST (LeNet-5, MLP) and Fashion-MNIST (LeNet-5), 3 epochs each, 2 threads.
# Writes the runs' metrics.csv / summary.json beside this script and results.md (a table of them).
# Usage: bash experiments/mnist_float/run.sh   (from the repository root, after apps/scripts/build.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="$here/../../build/apps/qatlab"
runs="$here/runs"
rm -rf "$runs"
mkdir -p "$runs"
"$Q" train --model lenet5 --dataset mnist --epochs 3 --threads 2 --progress plain --out "$runs/lenet5-mnist" | tee "$here/lenet5-mnist.log"
"$Q" train --model mlp --dataset mnist --epochs 3 --threads 2 --progress plain --out "$runs/mlp-mnist" | tee "$here/mlp-mnist.log"
"$Q" train --model lenet5 --dataset fashion-mnist --epochs 3 --threads 2 --progress plain --out "$runs/lenet5-fashion" | tee "$here/lenet5-fashion.log"

{
  echo "# Float baselines (3 epochs, batch 64, SGD momentum 0.9, lr 0.05 cosine, 2 threads)"
  echo
  echo "Made by \`bash experiments/mnist_float/run.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores)."
  echo
  echo "| run | epoch | test accuracy (%) | train img/s |"
  echo "| --- | --- | --- | --- |"
  for r in lenet5-mnist mlp-mnist lenet5-fashion; do
    awk -F, -v run="$r" 'NR > 1 { printf "| %s | %s | %.2f | %.0f |\n", run, $1, 100 * $6, $7 }' "$runs/$r/metrics.csv"
  done
} > "$here/results.md"
for r in lenet5-mnist mlp-mnist lenet5-fashion; do
  cp "$runs/$r/metrics.csv" "$here/$r.metrics.csv"
  cp "$runs/$r/summary.json" "$here/$r.summary.json"
done
rm -rf "$runs"
cat "$here/results.md"
