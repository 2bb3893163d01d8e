# cells.sh: keeping a sweep's cells across sessions, whose machines do not keep runs/ (sourced by study.sh
# and ablation/common.sh). A cell is a directory of RUN/cells/ (qatlab sweep).
#   keep_cells RUN KEPT      copies each cell of RUN into KEPT/cells (committed): its start.ini, log,
#                            metrics.csv and result.ini, and the checkpoint of a cell still training (a
#                            finished cell is reused from its result.ini, so its checkpoint is not kept;
#                            a kept result.ini of a cell started again since is not its result: removed)
#   restore_cells KEPT RUN   copies the cells kept in KEPT/cells back into RUN/cells; a cell already in RUN
#                            is left as it is
#   teacher_cache_args       (from this directory, with $Q the qatlab binary) "--qat-teacher-cache FILE" when
#                            the float model's outputs in runs/teacher-cache/ (teacher_cache.sh) are up to date
#                            for this machine, else nothing: the cells then run the teacher themselves (the
#                            same values either way, so the cells' keys do not change)

keep_cells() {
  local cell to f
  for cell in "$1"/cells/*/; do
    [ -d "$cell" ] || continue
    to="$2/cells/$(basename "$cell")"
    mkdir -p "$to"
    for f in start.ini log.txt metrics.csv result.ini; do if [ -f "$cell/$f" ]; then cp "$cell/$f" "$to/"; fi; done
    if [ -f "$cell/result.ini" ]; then
      rm -f "$to/checkpoint.h5"
    else
      rm -f "$to/result.ini"
      if [ -f "$cell/checkpoint.h5" ]; then cp "$cell/checkpoint.h5" "$to/"; fi
    fi
  done
}

restore_cells() {
  mkdir -p "$2/cells"
  if [ -d "$1/cells" ]; then cp -rn "$1/cells/." "$2/cells/"; fi
}

teacher_cache_args() {
  local file=runs/teacher-cache/recipe_swa.h5
  if "$Q" teacher-cache --check --distill runs/recipe_swa/checkpoint.h5 --dataset cifar10 --augment pad-crop:4,flip \
      --out "$file" >/dev/null 2>&1; then
    echo "--qat-teacher-cache $file"
  fi
}
