# common.sh: what the ablations' run.sh scripts share; sourced, after `here` (the ablation's directory) is
# set. Defines
#   Q             the qatlab binary: $QATLAB (made absolute) or the repository's build
#   exp           experiments/cifar10_resnet20, where the sweeps run (their keys name paths from there)
#   study_layers  the study's layer keys: first and last layer 8-bit, the residual branches on 8-bit
#                 grids, the stem's output at A bits, the last block's sum at 8 (study.sh's `common`)
#   restore_cells KEPT RUN   copies the cells kept in KEPT/cells back into RUN/cells (a later session's
#                 machine has no runs/); a cell already in RUN is left as it is
#   keep_cells RUN KEPT      copies each cell of RUN into KEPT/cells (committed): its start.ini, log,
#                 metrics and result.ini, and the checkpoint of a cell still training (a finished cell is
#                 reused from its result.ini, so its checkpoint is not kept)
exp="$here/../.."
Q="${QATLAB:-$exp/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
study_layers=(--first-last 8 --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8)

restore_cells() {
  mkdir -p "$2/cells"
  if [ -d "$1/cells" ]; then cp -rn "$1/cells/." "$2/cells/"; fi
}

keep_cells() {
  local cell to f
  for cell in "$1"/cells/*/; do
    [ -d "$cell" ] || continue
    to="$2/cells/$(basename "$cell")"
    mkdir -p "$to"
    for f in start.ini log.txt metrics.csv result.ini; do if [ -f "$cell/$f" ]; then cp "$cell/$f" "$to/"; fi; done
    if [ -f "$cell/result.ini" ]; then
      rm -f "$to/checkpoint.h5"
    elif [ -f "$cell/checkpoint.h5" ]; then
      cp "$cell/checkpoint.h5" "$to/"
    fi
  done
}
