#!/usr/bin/env bash
# make_tutorial.sh QATLAB [TEMPLATE [OUT]]: writes quant/TUTORIAL.md from its template by running the
# template's commands in a fresh scratch directory and pasting what they print.
#
# Template lines are copied as they are, except `@run COMMAND ...`: the command runs (a leading `qatlab`
# is the QATLAB binary given) and becomes a fenced block of "$ COMMAND" and its output (stdout and stderr).
# What depends on the machine rather than on the arithmetic is masked with "…": speed (img/s), elapsed
# time, the CPU's kernel path; `@KERNELS@` in the text becomes the kernel path of this machine. A command
# that fails stops the script (exit 1) naming it. The data set comes from $QATLAB_DATA_DIR (or
# ~/.cache/qatlab, where MNIST is fetched on first use). tests/apps/test_tutorial.cpp reruns this script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: $0 QATLAB_BINARY [TEMPLATE [OUT]]  (e.g. $0 build/apps/qatlab)" >&2
  exit 2
fi
qatlab="$(realpath "$1")"
template="$(realpath "${2:-$here/TUTORIAL.md.in}")"
out="$(realpath -m "${3:-$here/../../TUTORIAL.md}")"
[ -x "$qatlab" ] || { echo "make_tutorial.sh: $qatlab is not an executable (build it: bash apps/scripts/build.sh qatlab)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/qatlab_tutorial_XXXXXX")"
trap 'rm -rf "$work"' EXIT
body="$work/body.md"
kernels=""
: > "$body"
while IFS= read -r line || [ -n "$line" ]; do
  if [[ "$line" != "@run "* ]]; then
    printf '%s\n' "$line" >> "$body"
    continue
  fi
  cmd="${line#@run }"
  read -r -a words <<< "$cmd"
  [ "${words[0]}" = "qatlab" ] && words[0]="$qatlab"
  if ! (cd "$work" && "${words[@]}") > "$work/out.txt" 2>&1; then
    echo "make_tutorial.sh: this command failed: $cmd" >&2
    cat "$work/out.txt" >&2
    exit 1
  fi
  found="$(sed -nE 's/.*\(integer, ([a-z0-9]+) kernels\).*/\1/p' "$work/out.txt" | head -n 1)"
  [ -n "$found" ] && kernels="$found"
  {
    printf '```\n$ %s\n' "$cmd"
    sed -E -e "s#$work/##g" \
      -e 's/[0-9]+ img\/s/… img\/s/g' \
      -e 's/\(this run: [0-9:]+\)/(this run: …)/' \
      -e 's/img\/s  [0-9]+:[0-9]{2}$/img\/s  …/' \
      -e 's/\(integer, [a-z0-9]+ kernels\)/(integer, … kernels)/' "$work/out.txt"
    printf '```\n'
  } >> "$body"
done < "$template"
sed -e "s/@KERNELS@/${kernels:-unknown}/g" "$body" > "$work/final.md"
cp "$work/final.md" "$out"
