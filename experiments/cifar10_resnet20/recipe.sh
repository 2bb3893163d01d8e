#!/usr/bin/env bash
# recipe.sh: the float ResNet-20 of float_recipe.ini (200 epochs, several sessions at ~1-2 min an epoch on
# the 2-core machine). Starts the run, or resumes it from its last epoch's checkpoint when one exists
# (the result equals an uninterrupted run's; README "Resuming"). The run lives in runs/recipe (not
# committed; its metrics.csv has every epoch); the log grows in recipe.log line by line, and the
# metrics and the learning curve are copied to recipe.metrics.csv and recipe.curve.svg when an
# invocation ends.
#
# The machines this runs on do not keep files between sessions, so `recipe.sh save` (run before a
# session ends, with the training stopped) copies the run's checkpoint (~2 MB: weights, momentum,
# statistics, generator state and history) to resume/recipe.h5, which is committed; a later `recipe.sh`
# on a clone without runs/recipe resumes from that copy.
# Usage: bash experiments/cifar10_resnet20/recipe.sh [save]   (from the repository root, after
# apps/scripts/build.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
run="$here/runs/recipe"
kept="$here/resume/recipe.h5"
copy_results() {
  cp "$run/metrics.csv" "$here/recipe.metrics.csv"
  cp "$run/curve.svg" "$here/recipe.curve.svg"
}
# One function, called on the last line: bash has then read the whole script before it runs any of it,
# so an edit to this file during a run does not change what the run does.
main() {
  if [ "${1:-}" = save ]; then
    mkdir -p "$here/resume"
    cp "$run/checkpoint.h5" "$kept.tmp" && mv "$kept.tmp" "$kept"
    copy_results
    return 0
  fi
  if [ ! -f "$run/checkpoint.h5" ] && [ -f "$kept" ]; then
    mkdir -p "$run"
    cp "$kept" "$run/checkpoint.h5"
  fi
  if [ -f "$run/checkpoint.h5" ]; then
    args=(train --resume "$run/checkpoint.h5" --progress plain)
  else
    mkdir -p "$here/runs"
    args=(train --config "$here/float_recipe.ini" --out "$run")
  fi
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1 | grep --line-buffered -v " batch [0-9]*/"; } |
    tee -a "$here/recipe.log"
  copy_results
}
main "$@"; exit
