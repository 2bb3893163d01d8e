#!/usr/bin/env bash
# run.sh: float_recipe.ini shortened to 10 epochs (one warm-up epoch, cosine to 0), trained by qatlab and by
# PyTorch (torch_resnet20.py, the same recipe), one thread each; README.md here.
#   bash ablation/float-engine-check/run.sh qatlab|torch SEED    (from experiments/cifar10_resnet20)
# Needs /usr/bin/python3 with torch and numpy for `torch` (Debian: apt-get install python3-torch).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exp="$here/../.."
Q="${QATLAB:-$exp/../../build/apps/qatlab}"
data="${CIFAR10_DIR:-$HOME/.cache/qatlab/cifar-10-batches-bin}"
which="${1:?qatlab or torch}" seed="${2:?seed}"
mkdir -p "$exp/runs/float-engine-check"
case "$which" in
  qatlab)
    "$Q" train --config "$exp/float_recipe.ini" --epochs 10 --seed "$seed" --threads 1 --progress plain \
      --out "$exp/runs/float-engine-check/qatlab-s$seed" 2>&1 | grep --line-buffered -v " batch [0-9]*/" |
      tee "$here/qatlab-s$seed.log"
    cp "$exp/runs/float-engine-check/qatlab-s$seed/metrics.csv" "$here/qatlab-s$seed.csv" ;;
  torch)
    /usr/bin/python3 "$here/torch_resnet20.py" --data "$data" --epochs 10 --seed "$seed" --threads 1 \
      --out "$here/torch-s$seed.csv" 2>&1 | tee "$here/torch-s$seed.log" ;;
  *) echo "run.sh: expected qatlab or torch, got '$which'" >&2; exit 2 ;;
esac
