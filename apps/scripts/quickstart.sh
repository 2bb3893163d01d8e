#!/usr/bin/env bash
# quickstart.sh: the main job. Installs what is missing, builds, fetches MNIST if absent, trains LeNet-5
# for 3 epochs, evaluates the checkpoint and prints the results table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$root/apps/scripts/install_deps.sh"
bash "$root/apps/scripts/build.sh" qatlab
cd "$root"
./build/apps/qatlab train --model lenet5 --dataset mnist --epochs 3 --out runs/quickstart --overwrite
./build/apps/qatlab eval runs/quickstart/checkpoint.h5
