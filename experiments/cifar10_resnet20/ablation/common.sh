# common.sh: what the ablations' run.sh scripts share; sourced, after `here` (the ablation's directory) is
# set. Defines
#   Q             the qatlab binary: $QATLAB (made absolute) or the repository's build
#   exp           experiments/cifar10_resnet20, where the sweeps run (their keys name paths from there)
#   study_layers  the study's layer keys: first and last layer 8-bit, the residual branches on 8-bit
#                 grids, the stem's output at A bits, the last block's sum at 8 (study.sh's `common`)
#   keep_cells, restore_cells   (../cells.sh)
#   single_sweep_mode OUT [ARG]   for an ablation whose one sweep writes OUT: ARG "save" keeps the sweep's
#                 cells in $here/kept for the next session and exits; no ARG restores them into OUT
#                 (the sweep then resumes); anything else is a usage error
#   seed_sweep_mode PREFIX ARG   for an ablation of two seeds, one sweep each, writing PREFIX-s1 and
#                 PREFIX-s2: ARG "save" keeps both sweeps' cells in $here/kept/s1 and s2 and exits; 1 or 2
#                 sets `seed` and `out` (PREFIX-sSEED) and restores that seed's kept cells into it; anything
#                 else is a usage error
#   run_sweep LOG ARGS...   qatlab ARGS (a sweep), its output appended to LOG after a line with the time
#                 and the command
exp="$here/../.."
Q="${QATLAB:-$exp/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
study_layers=(--first-last 8 --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8)

# shellcheck source=../cells.sh
source "$here/../../cells.sh"

single_sweep_mode() {
  local out="$1" arg="${2:-}"
  case "$arg" in
    save) keep_cells "$out" "$here/kept"; exit 0 ;;
    "") restore_cells "$here/kept" "$out" ;;
    *) echo "usage: bash ablation/$(basename "$here")/run.sh [save]" >&2; exit 2 ;;
  esac
}

seed_sweep_mode() {
  local prefix="$1" arg="${2:-}" s
  case "$arg" in
    save) for s in 1 2; do keep_cells "$prefix-s$s" "$here/kept/s$s"; done; exit 0 ;;
    1|2) seed="$arg"; out="$prefix-s$seed"; restore_cells "$here/kept/s$seed" "$out" ;;
    *) echo "usage: bash ablation/$(basename "$here")/run.sh 1|2|save" >&2; exit 2 ;;
  esac
}

run_sweep() {
  local log="$1"
  shift
  { echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): qatlab $*"; "$Q" "$@" 2>&1; } | tee -a "$log"
}
