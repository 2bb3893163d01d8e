#!/usr/bin/env bash
# teacher_cache.sh: the float model's outputs (the teacher of the distilled QAT cells) for every crop and
# flip of every CIFAR-10 training image, made once per machine into runs/teacher-cache/recipe_swa.h5
# (`qatlab teacher-cache`, README; 162 versions of 50,000 images, about 320 MB, 90 minutes on both
# cores; stopped part way, e.g. by a session's end, it goes on from its finished parts when run again). The
# float kernels' path is part of it: on a machine with other kernels it is made again. The
# study's sweeps and the ablations pass it to their cells when it is up to date (cells.sh's
# teacher_cache_args); the cells' values are the same with it and without it, only faster.
#   bash experiments/cifar10_resnet20/teacher_cache.sh   (after the float model exists; THREADS=N to share)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
cd "$here"
mkdir -p runs/teacher-cache
"$Q" teacher-cache --distill runs/recipe_swa/checkpoint.h5 --dataset cifar10 --augment pad-crop:4,flip \
  --out runs/teacher-cache/recipe_swa.h5 --overwrite --threads "${THREADS:-0}"
