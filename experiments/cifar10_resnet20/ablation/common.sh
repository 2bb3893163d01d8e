# common.sh: what the ablations' run.sh scripts share; sourced, after `here` (the ablation's directory) is
# set. Defines
#   Q             the qatlab binary: $QATLAB (made absolute) or the repository's build
#   exp           experiments/cifar10_resnet20, where the sweeps run (their keys name paths from there)
#   study_layers  the study's layer keys: first and last layer 8-bit, the residual branches on 8-bit
#                 grids, the stem's output at A bits, the last block's sum at 8 (study.sh's `common`)
#   keep_cells, restore_cells   (../cells.sh)
exp="$here/../.."
Q="${QATLAB:-$exp/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
study_layers=(--first-last 8 --layer-bits residual-branches=:8 --layer-bits stem.conv=8: --layer-bits stage3.2=:8)

# shellcheck source=../cells.sh
source "$here/../../cells.sh"
