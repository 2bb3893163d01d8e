#!/usr/bin/env bash
# fetch_onnxruntime.sh: installs ONNX Runtime for Node (npm package onnxruntime-node, its CPU build) into
# ~/.cache/qatlab/onnxruntime (or $QATLAB_ONNXRUNTIME_DIR), outside the repository, for the tests and the
# experiment that run exported ONNX models. --ignore-scripts: the package's install script only fetches
# GPU libraries from a host outside the npm registry; the CPU runtime is in the package itself.
# Never fails the caller: without node, npm or the registry it says so, and the tests that need the
# runtime are skipped.
set -uo pipefail
version=1.30.0
dir="${QATLAB_ONNXRUNTIME_DIR:-$HOME/.cache/qatlab/onnxruntime}"
if [ -f "$dir/node_modules/onnxruntime-node/package.json" ] &&
  grep -q "\"version\": \"$version\"" "$dir/node_modules/onnxruntime-node/package.json"; then
  exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "fetch_onnxruntime.sh: node or npm not found: the ONNX Runtime tests will be skipped" >&2
  exit 0
fi
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"name": "qatlab-onnxruntime", "private": true}' >"$dir/package.json"
if ! (cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --silent "onnxruntime-node@$version" >/dev/null); then
  echo "fetch_onnxruntime.sh: npm could not install onnxruntime-node@$version: the ONNX Runtime tests will be skipped" >&2
fi
exit 0
