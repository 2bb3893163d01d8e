#!/usr/bin/env bash
# recipe.sh: the float ResNet-20s of the study, one per recipe file (200 epochs each, several sessions at
# ~1.5-2 min an epoch on the 2-core machine):
#   recipe.sh [save]      float_recipe.ini     -> runs/recipe,    recipe.log,    resume/recipe.h5
#   recipe.sh kd [save]   float_recipe_kd.ini  -> runs/recipe_kd, recipe_kd.log, resume/recipe_kd.h5
#                         (distilled from resume/recipe.h5, the first recipe's model)
#   recipe.sh ens [save]  float_recipe_ens.ini -> runs/recipe_ens, recipe_ens.log, resume/recipe_ens.h5
#                         (distilled from the ensemble of resume/recipe.h5 and resume/recipe_kd.h5; starts
#                         only once the kd run has finished)
#   recipe.sh swa [save]  float_recipe_swa.ini -> runs/recipe_swa, recipe_swa.log, resume/recipe_swa.h5
#                         (the first run's 200 epochs and 30 more whose weights are averaged: it goes on
#                         from resume/recipe.h5)
#   recipe.sh kd-swa [save] float_recipe_kd_swa.ini -> runs/recipe_kd_swa, recipe_kd_swa.log,
#                         resume/recipe_kd_swa.h5 (likewise from the kd run's resume/recipe_kd.h5, once
#                         that run has finished)
# Starts the run, or resumes it from its last epoch's checkpoint when one exists (the result equals an
# uninterrupted run's; README "Resuming"). The run lives in runs/NAME (not committed; its metrics.csv has
# every epoch); the log grows in NAME.log line by line, and the metrics and the learning curve are copied
# to NAME.metrics.csv and NAME.curve.svg when an invocation ends.
#
# The machines this runs on need not keep files between sessions, so `recipe.sh [kd] save` (run before a
# session ends, with the training stopped) copies the run's checkpoint (~2 MB: weights, momentum,
# statistics, generator state and history) to resume/NAME.h5, which is committed; a later `recipe.sh`
# on a clone without runs/NAME resumes from that copy.
# Usage: bash experiments/cifar10_resnet20/recipe.sh [kd] [save]   (after apps/scripts/build.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
name=recipe config=float_recipe.ini
case "${1:-}" in
  kd) name=recipe_kd config=float_recipe_kd.ini; shift ;;
  ens) name=recipe_ens config=float_recipe_ens.ini; shift ;;
  swa) name=recipe_swa config=float_recipe_swa.ini; shift ;;
  kd-swa) name=recipe_kd_swa config=float_recipe_kd_swa.ini; shift ;;
esac
if [ -n "${1:-}" ] && [ "$1" != save ] || [ $# -gt 1 ]; then
  echo "recipe.sh: usage: recipe.sh [kd|ens|swa|kd-swa] [save]; got '$*'" >&2
  exit 2
fi
run="$here/runs/$name"
kept="$here/resume/$name.h5"
copy_results() {
  cp "$run/metrics.csv" "$here/$name.metrics.csv"
  cp "$run/curve.svg" "$here/$name.curve.svg"
}
# One function, called on the last line: bash has then read the whole script before it runs any of it,
# so an edit to this file during a run does not change what the run does.
main() {
  cd "$here/../.."  # the recipe files name the teacher's checkpoint from the repository root
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
  # The run a new one needs finished: the ensemble's teacher, or the run an averaging one goes on from.
  local needs=""
  case "$name" in
    recipe_ens | recipe_kd_swa) needs=recipe_kd ;;
    recipe_swa) needs=recipe ;;
  esac
  if [ -n "$needs" ] && [ ! -f "$run/checkpoint.h5" ]; then
    # A teacher still training would teach from its unfinished weights; averaging would begin mid-schedule.
    local done
    done=$("$Q" info "$here/resume/$needs.h5" | sed -n 's/^  epochs done *//p')
    if [ "$done" != 200 ]; then
      echo "recipe.sh: resume/$needs.h5 has done ${done:-no} epochs of 200; finish that run first" >&2
      exit 1
    fi
  fi
  if [ -f "$run/checkpoint.h5" ]; then
    args=(train --resume "$run/checkpoint.h5" --progress plain)
  elif [ "$name" != recipe_ens ] && [ -n "$needs" ]; then
    # Its first 200 epochs are that run's (the schedule spans them): go on from there, in a run of its own.
    args=(train --resume "$here/resume/$needs.h5" --config "$here/$config" --out "$run")
  else
    mkdir -p "$here/runs"
    args=(train --config "$here/$config" --out "$run")
  fi
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab ${args[*]}"; "$Q" "${args[@]}" 2>&1 | grep --line-buffered -v " batch [0-9]*/"; } |
    tee -a "$here/$name.log"
  copy_results
}
main "$@"; exit
