#!/usr/bin/env bash
# test.sh: installs what is missing, builds qatlab with its tests and runs the whole suite with ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$root/apps/scripts/install_deps.sh"
bash "$root/apps/scripts/build.sh"
# ONNX Runtime (npm onnxruntime-node, outside the repository) for the tests that run exported models;
# without it they are skipped and say so.
bash "$root/apps/scripts/fetch_onnxruntime.sh"
jobs="$(nproc 2>/dev/null || echo 2)"
ctest --test-dir "$root/build" --output-on-failure -j "$jobs"
# The installed library as another project uses it: find_package(qatlab), apps/example.
bash "$root/apps/scripts/library_example.sh"
