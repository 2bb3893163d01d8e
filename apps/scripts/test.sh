#!/usr/bin/env bash
# test.sh: installs what is missing, builds qatlab with its tests and runs the whole suite with ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Each stage's wall time goes to the log (CI's budget is 20 minutes for this script and the sanitizers').
stage_start=$SECONDS
stage_done() { echo "test.sh: $1 took $((SECONDS - stage_start)) s"; stage_start=$SECONDS; }
bash "$root/apps/scripts/install_deps.sh"
stage_done "installing"
bash "$root/apps/scripts/build.sh"
stage_done "the build"
# ONNX Runtime (npm onnxruntime-node, outside the repository) for the tests that run exported models;
# without it they are skipped and say so.
bash "$root/apps/scripts/fetch_onnxruntime.sh"
stage_done "fetching ONNX Runtime"
jobs="$(nproc 2>/dev/null || echo 2)"
ctest --test-dir "$root/build" --output-on-failure -j "$jobs"
stage_done "ctest"
# The installed library as another project uses it: find_package(qatlab), apps/example.
bash "$root/apps/scripts/library_example.sh"
stage_done "the library example"
