#!/usr/bin/env bash
# study.sh: the bit-width study on the float recipe's ResNet-20 (issue "ResNet-20 study"): PTQ and QAT
# cells from runs/recipe_swa/checkpoint.h5 (the recipe's model with 30 more epochs whose weights are
# averaged: `recipe.sh swa`, 90.36 %), first and last layer at 8 bits, every accuracy the integer
# graph's (with the simulation's and their top-1 agreement beside it, `qatlab sweep`'s results.csv).
# Until 2026-12-05 the study ran from the recipe's model itself (v2, 90.05 %): the averaged model is better
# in float and loses half as much to PTQ at 4 bits (ablation/w4-swa-float); v2's cells are in study-v2/.
#
# WkAk here is the papers' (PACT, LSQ): weights and every conv's input at k bits, the first and the last
# layer at 8 bits (their weights and their inputs: the image, and the pooled output of the last block);
# the residual adds read their branches (conv-BN outputs, still signed) on 8-bit grids where those
# papers add in floating point (`residual-branches=:8`, quant/README.md "Which bits the add reads"); the
# other sums, with the blocks' ReLU, are the next convs' inputs at A bits. From 2026-12-06 the 4-, 3- and
# 2-bit sweeps keep those sums at 8 bits too (`residual-sums=:8`: the residual stream, which the identity
# shortcuts carry from add to add, at 8 bits; each conv that reads it requantizes it to A bits first, so
# every conv input but the first and the last is still at A bits) and train without cutout (crop and flip
# only): at W2A2 both lifted the first epochs by several points, at W4A4 the seed-1 LSQ cell ended 0.17
# higher (ablation/no-cutout, results.md "Low bits"). Their earlier cells, with cutout and A-bit sums, are
# in ablation/no-cutout/kept/ (w4-cutout, w4-tensor-cutout, w2-cutout) and study-w4.log, study-w2.log.
# From 2026-12-06 11:30 UTC the 3- and 2-bit LSQ cells bound their weight steps (`--lsq-step-bounds 8`):
# without the bounds, channels of the 2-bit convs die with their step at the floor (5 to 8 of them in each
# W2A2 cell, `qatlab inspect`), and with them the W2A2 cell tested 3.3 points higher over epochs 4-13
# (ablation/no-cutout, w2-stream8-bounds). The unbounded W2A2 cell (epoch 20) is kept in
# ablation/no-cutout/kept/w2-stream8.
# From 2026-12-06 13:10 UTC the 3- and 2-bit cells put their weights on the full grid (`--weight-range full`:
# [-4, 3] and [-2, 1], LSQ's, where the narrow grid is symmetric, [-3, 3] and [-1, 1]): with bounded steps
# the W2A2 LSQ cell ended at 86.21 % on four levels against 85.80 % on three, training 0.36-1.07 points
# higher at every epoch from 3 on (ablation/no-cutout, w2-stream8-bounds-full). The three-level cell is kept there.
# From 2026-12-07 04:10 UTC the 3- and 2-bit cells put their weights on the mid-rise grid (`--weight-range
# mid-rise`: the odd codes of [-7, 7] and [-3, 3], levels symmetric around 0 without one at 0, as DoReFa's
# and PACT's): the W2A2 LSQ cell ended at 86.80 % against 86.21 % on the full grid, leading at every epoch
# (ablation/w2-mid-rise, whose rule asked for 0.3). That cell is the w2 sweep's seed-1 LSQ W2A2 cell (same
# key); the full-grid w2 sweep (that one cell) is kept in study-w2-full-grid/.
# From 2026-12-07 07:25 UTC the 3- and 2-bit cells fine-tune for 60 epochs, batch norm frozen for the last 20
# (30 and 10 before): the full-grid W2A2 LSQ cell ended at 86.82 % after 60 against 86.21 % after 30
# (ablation/w2-long60, whose rule asked for 0.5). The 30-epoch mid-rise w2 sweep (its W2A2 LSQ seed-1 cell,
# 86.80 %) is kept in study-w2-mid-rise-30/.
#
# A small set of sweeps, one per fine-tuning length, since the cells need different schedules:
#   ptq       min/max and histogram PTQ at every pair, per-tensor and per-channel weights (no training)
#   w8        W8A8 and W4A8, min/max QAT, LSQ and PACT, per-tensor and per-channel, 2 epochs at lr 0.001,
#             batch norm frozen throughout (the float model's statistics, recomputed over the training set
#             for its averaged weights: +0.06 to +0.23 in the four paired per-channel cells of
#             ablation/w8-freeze-bn, chosen on those; the whole rerun then moved the per-tensor cells by
#             -0.18 to +0.17: within one seed's noise, results.md "State")
#   w8-s2     the cells of w8 with seed 2 (added 2026-12-06 for W8A8: the best learned W8A8 cell, PACT per-channel,
#             stood 0.12 under float with one seed, a gap inside one seed's noise; the mean of two says more;
#             W4A8 added in session 29: the issue asks two seeds of every 4-bit cell)
#             (w8 and w8-s2 are distilled from the float model since 2026-12-06 14:25 UTC, as the low-bit cells:
#             over the six paired per-channel W8A8 cells of ablation/w8-distill the mean difference was +0.02,
#             LSQ's +0.06 and +0.12; the rule set before that run adopted it for any positive mean. Their
#             undistilled results are kept in ablation/w8-distill/undistilled/.)
#   w4        W4A4, LSQ and PACT, per-channel, 2 seeds, 30 epochs from lr 0.003 (one warm-up epoch, cosine),
#             batch norm frozen for the last 10 (its running statistics used in training, as in evaluation)
#   w4-tensor W4A4, LSQ and PACT with per-tensor weights, 2 seeds (since session 29, as every 4-bit cell), the
#             same 30 epochs (the per-tensor vs per-channel row)
#   w3        W3A3, LSQ and PACT, per-channel, 2 seeds, 60 epochs from lr 0.003 (one warm-up epoch, cosine),
#             batch norm frozen for the last 20, weight decay 2.5e-4
#   w2        W2A2 and W2A8, LSQ and PACT, per-channel, 2 seeds, as w3 with weight decay 1.25e-4
# (The 4-bit cells ran 15 epochs from lr 0.001 until 2026-12-05: 30 from 0.003 gained 0.25 points at W4A4,
# ablation/w4-long30, and so did batch norm frozen for the last third, ablation/w4-freeze-bn; the 3-bit cells
# were set to 20 epochs from 0.001 and had not run.)
# (QAT: SGD momentum 0.9, cosine, weight decay 5e-4 on conv and linear weights as the float recipe, halved
# at 3 bits and quartered at 2: the grid itself constrains the weights there, and LSQ too lowers weight
# decay for its low-bit networks. The learning rates were chosen on short probes, results.md "Low-bit
# fine-tuning": 0.01 throws the converged model off. LSQ's steps start at the first batch's least-squares step
# (--lsq-init mse): from this converged model the paper's formula starts W4A4 eight points lower. The 4-, 3- and
# 2-bit cells learn from the float model's outputs (--qat-distill 1: knowledge distillation, the teacher's
# outputs alone at temperature 1, as LSQ's distilled networks): W4A4 LSQ without it ended 0.86 points under
# float (ablation/w4-no-kd).)
# (The papers fine-tune low-bit ResNet-20s for tens of epochs; 8-bit QAT needs one or two.) Each sweep
# writes runs/study-NAME/ (results.csv/json, plots, per-cell logs) and resumes where it stopped (a QAT
# cell from its last epoch):
# run the script again after an interruption. The logs are study-NAME.log here. The sweeps' results
# are then joined into one report, study/all/ (`qatlab sweep --merge`: results.csv/json, table.md, the
# plots per granularity; table.md's second table sets the best learned rows beside published.ini's figures),
# rewritten after every run and by `save`; results.md compares it with the papers.
#
# The machines this runs on do not keep files between sessions: `study.sh save` (with the sweeps
# stopped) copies what a later session needs into study/ (committed): each sweep's results, plots and
# logs, every finished cell's result.ini, log and metrics.csv (a rerun reuses the cell from the first two;
# `qatlab compare` reads the third), and the checkpoint
# and start.ini of a cell still training (~1 MB: a rerun goes on from its last epoch);
# `study.sh` copies them back into runs/ when runs/ lacks them.
# Usage: bash experiments/cifar10_resnet20/study.sh [NAME ...]   (from the repository root, after the
# averaged float run has finished: recipe.sh swa, which study.sh runs first when only its kept checkpoint is
# here)
#        bash experiments/cifar10_resnet20/study.sh save
#        bash experiments/cifar10_resnet20/study.sh status [NAME ...]   (each sweep's cells: finished, training at
#        epoch k, to run; the epochs left; `qatlab sweep --status`, which runs nothing)
# METHODS=m1[,m2] (default: each sweep's own): only these of a sweep's methods, e.g. `METHODS=lsq study.sh w3`
# runs the W3A3 LSQ cells first; their keys are the full sweep's, so a later run without METHODS reuses them.
# PROCS=N (default 1): N processes under mpirun, each running whole cells on its share of the cores (a cell's
# result does not depend on it; on the 2-core machine two 1-thread processes finish more cells an hour than one
# 2-thread process, results.md "Running the study"). THREADS=T: T threads per process instead of that share
# (e.g. THREADS=1 leaves a core to an ablation running beside the study).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac  # the sweeps run from $here
# The float model and the sweeps' directories by paths relative to this directory: a cell's key names its
# float model's path, so the cells stay the same wherever the repository lives.
float="runs/recipe_swa/checkpoint.h5"
kept="$here/study"
# shellcheck source=cells.sh
source "$here/cells.sh"
# The sweeps that have results so far joined into study/all/ (two or more of them), named by their paths
# from this directory (the merged report lists them).
merge_all() {
  local done=()
  for name in ptq w8 w8-s2 w4 w4-tensor w3 w2; do
    if [ -f "$here/runs/study-$name/results.json" ]; then
      done+=("runs/study-$name")
    elif [ "$name" = w2 ] && [ -f "$here/study-w2-mid-rise-30/study-w2/results.json" ]; then
      # Until the 60-epoch w2 cells have run, the 30-epoch mid-rise W2A2 cell (study-w2-mid-rise-30/README.md).
      done+=("study-w2-mid-rise-30/study-w2")
    fi
  done
  if [ ${#done[@]} -ge 2 ]; then
    (cd "$here" && "$Q" sweep --merge "$(IFS=,; echo "${done[*]}")" --out study/all --published published.ini)
  fi
}
# only_methods NAME SPEC LIST: SPEC (a sweep's options) with its --methods cut down to LIST, and without its
# --lsq-* options when LIST has no lsq (the sweep refuses options no cell uses; other methods' keys do not
# hold them); a method in LIST that the sweep does not run is an error.
only_methods() {
  local name="$1" spec="$2" list="$3" have m
  have="$(sed -E 's/.*--methods ([^ ]+).*/\1/' <<<"$spec")"
  for m in ${list//,/ }; do
    case ",$have," in
      *",$m,"*) ;;
      *) echo "study.sh: METHODS has '$m', which sweep '$name' does not run (it runs $have)" >&2; exit 2 ;;
    esac
  done
  spec="${spec/--methods $have/--methods $list}"
  case ",$list," in
    *,lsq,*) ;;
    *) spec="$(sed -E 's/ --lsq-[a-z-]+ [^ ]+//g' <<<"$spec")" ;;
  esac
  echo "$spec"
}
# The whole run is one function, called on the script's last line: bash reads a script as it runs it,
# so without this an edit to the file during a run (hours long) would change what the rest of the run does.
main() {
  cd "$here"
  if [ "${1:-}" = save ]; then
    for run in "$here"/runs/study-*/; do
      [ -d "$run" ] || continue
      keep="$kept/$(basename "$run")"
      mkdir -p "$keep"
      cp "$run"/results.* "$run"/cells.csv "$run"/table.md "$run"/*.svg "$keep"/ 2>/dev/null || true
      keep_cells "$run" "$keep"
    done
    merge_all
    return 0
  fi
  if [ ! -f "$here/runs/recipe_swa/summary.json" ] && [ -f "$here/resume/recipe_swa.h5" ]; then
    # The float run's kept checkpoint: recipe.sh resumes it, which for a finished run only writes its summary.
    QATLAB="$Q" bash "$here/recipe.sh" swa
  fi
  for keep in "$kept"/study-*/; do
    [ -d "$keep" ] || continue
    run="$here/runs/$(basename "$keep")"
    if [ ! -d "$run" ]; then mkdir -p "$here/runs" && cp -r "$keep" "$run"; fi
  done
  if [ ! -f "$here/runs/recipe_swa/summary.json" ]; then
    echo "study.sh: the float run has not finished (run experiments/cifar10_resnet20/recipe.sh swa first)" >&2
    exit 1
  fi
  local status=() status_log=/dev/null
  if [ "${1:-}" = status ]; then
    status=(--status)
    status_log="$(mktemp)"
    shift
  fi
  names=("$@")
  # The 2-bit cells last: they take the longest.
  if [ ${#names[@]} -eq 0 ]; then names=(ptq w8 w8-s2 w4 w4-tensor w3 w2); fi

  # The residual adds read their branches at 8 bits; every conv input is at A bits but the first's (the
  # image) and the classifier's (the last block's sum, pooled) (see the header). The sweep's first-last
  # policy alone would put the stem's output at 8 bits and the classifier's input at A: these keys come
  # first and beat it.
  procs="${PROCS:-1}"
  if ! [[ "$procs" =~ ^[1-9][0-9]*$ ]]; then
    echo "study.sh: PROCS is '$procs', expected a process count >= 1" >&2
    exit 2
  fi
  threads=$(( $(nproc) / procs ))
  if [ "$threads" -lt 1 ]; then threads=1; fi
  if [ -n "${THREADS+set}" ]; then
    if ! [[ "$THREADS" =~ ^[1-9][0-9]*$ ]]; then
      echo "study.sh: THREADS is '$THREADS', expected a thread count >= 1" >&2
      exit 2
    fi
    threads="$THREADS"
  fi
  launcher=()
  if [ "$procs" -gt 1 ]; then launcher=(mpirun --allow-run-as-root -np "$procs"); fi
  common=(--dataset cifar10 --batch-size 128 --first-last 8 --layer-bits residual-branches=:8
          --layer-bits stem.conv=8: --layer-bits stage3.2=:8 --threads "$threads")
  # The 4-bit cells' fine-tuning: 30 epochs from lr 0.003, batch norm frozen for the last 10.
  local lowbit="--qat-epochs 30 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 20"
  # The 3- and 2-bit cells': twice as long, batch norm frozen for the last 20 (see the header).
  local lowbit60="--qat-epochs 60 --qat-lr 0.003 --qat-warmup-epochs 1 --qat-freeze-bn-after 40"
  # The 4-, 3- and 2-bit cells keep the residual stream (the blocks' sums) at 8 bits, requantized to A bits
  # where a conv reads it, and train without cutout (see the header).
  local stream="--layer-bits residual-sums=:8 --augment pad-crop:4,flip"
  # The 3- and 2-bit LSQ cells keep each weight step within [its channel's min/max step / 8, 15/8 of its
  # largest |w|]: unbounded, 2-bit channels die with their step at the floor (see the header).
  local bounds="--lsq-step-bounds 8"
  # The 3- and 2-bit cells' weights on the mid-rise grid, the odd codes of [-(2^b - 1), 2^b - 1] (see the header).
  local grid="--weight-range mid-rise"
  declare -A cells=(
    [ptq]="--methods ptq-minmax,ptq-histogram --pairs 8/8,6/6,4/4,3/3,2/2,4/8,2/8 --granularity per-tensor,per-channel --seeds 1"
    [w8]="--methods qat-minmax,lsq,pact --pairs 8/8,4/8 --granularity per-tensor,per-channel --seeds 1 --qat-epochs 2 --qat-lr 0.001 --qat-freeze-bn-after 0 --lsq-init mse --qat-distill 1"
    [w8-s2]="--methods qat-minmax,lsq,pact --pairs 8/8,4/8 --granularity per-tensor,per-channel --seed 2 --seeds 1 --qat-epochs 2 --qat-lr 0.001 --qat-freeze-bn-after 0 --lsq-init mse --qat-distill 1"
    [w4]="--methods lsq,pact --pairs 4/4 --granularity per-channel --seeds 2 $lowbit --lsq-init mse --qat-distill 1 $stream"
    [w4-tensor]="--methods lsq,pact --pairs 4/4 --granularity per-tensor --seeds 2 $lowbit --lsq-init mse --qat-distill 1 $stream"
    [w3]="--methods lsq,pact --pairs 3/3 --granularity per-channel --seeds 2 $lowbit60 --qat-weight-decay 0.00025 --lsq-init mse --qat-distill 1 $stream $bounds $grid"
    [w2]="--methods lsq,pact --pairs 2/2,2/8 --granularity per-channel --seeds 2 $lowbit60 --qat-weight-decay 0.000125 --lsq-init mse --qat-distill 1 $stream $bounds $grid"
  )
  for name in "${names[@]}"; do
    if [ -z "${cells[$name]+set}" ]; then
      echo "study.sh: unknown sweep '$name' (expected: ${!cells[*]})" >&2
      exit 2
    fi
    local spec="${cells[$name]}"
    if [ -n "${METHODS:-}" ]; then spec="$(only_methods "$name" "$spec" "$METHODS")"; fi
    # The distilled sweeps read the float model's outputs from runs/teacher-cache when they are up to date
    # (teacher_cache.sh; the same values, faster).
    local cache=""
    if [ "$name" != ptq ]; then cache="$(teacher_cache_args)"; fi
    # shellcheck disable=SC2086,SC2206
    args=(sweep "$float" --out "runs/study-$name" "${common[@]}" $spec $cache)
    if [ ${#status[@]} -gt 0 ]; then
      "$Q" "${args[@]}" "${status[@]}" | tee -a "$status_log"
      continue
    fi
    { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): ${launcher[*]}${launcher[*]:+ }qatlab ${args[*]}"; "${launcher[@]}" "$Q" "${args[@]}" 2>&1; } | tee -a "$here/study-$name.log"
  done
  if [ ${#status[@]} -eq 0 ]; then
    merge_all
  else
    # The sweeps' epochs left, added up (each sweep's last line: "... N QAT epochs left ...").
    sed -nE 's/.* ([0-9]+) QAT epochs left.*/\1/p' "$status_log" |
      awk '{ n += $1 } END { printf "study: %d QAT epochs left over these sweeps\n", n }'
    rm -f "$status_log"
  fi
}
main "$@"; exit
