#!/usr/bin/env bash
# library_example.sh: qatlab as another project uses it. Installs the build tree (apps/scripts/build.sh
# first) into a temporary prefix, builds apps/example against it with find_package(qatlab), and runs
# the example (float training, QAT, convert, the integer graph); fails if any step does.
# Usage: bash apps/scripts/library_example.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$root/build" --prefix "$prefix/install" > /dev/null
cmake -S "$root/apps/example" -B "$prefix/build" -DCMAKE_PREFIX_PATH="$prefix/install" > /dev/null
cmake --build "$prefix/build" -j "$(nproc 2>/dev/null || echo 2)" > /dev/null
# The library leaves OpenMP's settings to the program; this one takes the CLI's short spin (README).
GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-3000}" "$prefix/build/qat_example"
echo "library example: built against the installed tree and ran"
