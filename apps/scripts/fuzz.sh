#!/usr/bin/env bash
# fuzz.sh [SECONDS] [HARNESS ...]: builds the libFuzzer harnesses of tests/fuzz/ with clang
# (-DQATLAB_FUZZ=ON: libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer) in build-fuzz/, writes
# a seed corpus per harness from files the project makes itself, runs each harness for SECONDS
# (default 600) and prints one summary line per harness: executions, crashes, timeouts.
# Inputs that crash, leak, run out of memory or time out are kept in tests/fuzz/crashes/<harness>/.
# Without HARNESS arguments: every tests/fuzz/fuzz_*.cpp. Installs clang first when it is missing.
# FUZZ_FLAGS adds libFuzzer flags, e.g. FUZZ_FLAGS=-detect_leaks=0. The small leaks the HDF5 library
# itself makes on damaged files are not reported: tests/fuzz/hdf5_leaks.supp (tests/README.md, "Fuzzing").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build-fuzz"
jobs="$(nproc 2>/dev/null || echo 2)"
seconds="${1:-600}"
if (($# > 0)); then shift; fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: SECONDS must be a positive whole number, got '$seconds'" >&2
  exit 2
fi
harnesses=("$@")
if ((${#harnesses[@]} == 0)); then
  harnesses=($(cd "$root/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//'))
fi
for h in "${harnesses[@]}"; do
  if [[ ! -f "$root/tests/fuzz/$h.cpp" ]]; then
    echo "fuzz.sh: no harness $h (tests/fuzz/$h.cpp); there are: $(cd "$root/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//' | tr '\n' ' ')" >&2
    exit 2
  fi
done

# ------------------------------------------------------------------ clang with libFuzzer and OpenMP
source "$root/apps/scripts/clang_env.sh"
ensure_clang fuzz.sh -fsanitize=fuzzer,address,undefined -fopenmp || exit 1

# ------------------------------------------------------------------ build
# -O1 -g1: what the sanitizers recommend, and fast enough to fuzz (test_sanitize.sh, which only runs
# the suites, builds at -O0), with line tables for the stacks.
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DQATLAB_FUZZ=ON -DQATLAB_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target "${harnesses[@]}" make_seeds qatlab

# ------------------------------------------------------------------ seeds
# Small valid files, every one written by the project: IDX, CIFAR and INI files by make_seeds, and a
# float checkpoints (MLP, LSTM), QAT checkpoints (MLP, LeNet-5), integer models, dynamic models and a teacher cache by the qatlab command, trained
# for one epoch on 64 synthetic images, the MLP's float ONNX export and the ONNX fixture PyTorch made. The HDF5 harnesses take the content after the 512-byte seal
# header (they seal each input themselves), so those seeds are the files without it.
seeds="$build/fuzz-seeds"
if [[ ! -f "$seeds/done" ]]; then
  rm -rf "$seeds"
  "$build/tests/fuzz/make_seeds" "$seeds" >/dev/null
  q="$build/apps/qatlab"
  runs="$seeds/runs"
  common=(--data-dir "$seeds/data" --dataset mnist --threads 1 --progress none)
  export OMP_NUM_THREADS=1
  # The seed models are made by the instrumented binary: a report here is already a finding.
  "$q" train --model mlp --epochs 1 --train-limit 64 --out "$runs/mlp" "${common[@]}" >/dev/null
  "$q" qat --from "$runs/mlp/checkpoint.h5" --epochs 1 --train-limit 64 --wbits 4 --abits 8 \
    --out "$runs/mlp-qat" "${common[@]}" >/dev/null
  "$q" qat --model lenet5 --epochs 1 --train-limit 64 --wquant lsq --per-channel \
    --out "$runs/lenet-qat" "${common[@]}" >/dev/null
  "$q" convert "$runs/mlp-qat/checkpoint.h5" -o "$runs/mlp.int8.h5" >/dev/null
  "$q" convert "$runs/lenet-qat/checkpoint.h5" -o "$runs/lenet.int8.h5" >/dev/null
  "$q" train --model lstm-rows --epochs 1 --train-limit 64 --out "$runs/lstm" "${common[@]}" >/dev/null
  for m in mlp lstm; do
    "$q" ptq --dynamic "$runs/$m/checkpoint.h5" --out "$runs/$m-dyn" --data-dir "$seeds/data" --threads 1 >/dev/null
  done
  "$q" teacher-cache --distill "$runs/mlp/checkpoint.h5" --train-limit 16 --augment pad-crop:1,flip \
    --out "$runs/mlp.cache.h5" --data-dir "$seeds/data" --dataset mnist --threads 1 >/dev/null
  strip_seal() { mkdir -p "$(dirname "$2")" && tail -c +513 "$1" >"$2"; }
  strip_seal "$runs/mlp/checkpoint.h5" "$seeds/corpus/fuzz_checkpoint/mlp-float.h5"
  strip_seal "$runs/mlp-qat/checkpoint.h5" "$seeds/corpus/fuzz_checkpoint/mlp-qat.h5"
  strip_seal "$runs/lenet-qat/checkpoint.h5" "$seeds/corpus/fuzz_checkpoint/lenet-qat.h5"
  strip_seal "$runs/mlp.int8.h5" "$seeds/corpus/fuzz_int8_model/mlp.int8.h5"
  strip_seal "$runs/lenet.int8.h5" "$seeds/corpus/fuzz_int8_model/lenet.int8.h5"
  strip_seal "$runs/mlp-dyn/model.dynamic.h5" "$seeds/corpus/fuzz_dynamic_model/mlp.dynamic.h5"
  strip_seal "$runs/lstm-dyn/model.dynamic.h5" "$seeds/corpus/fuzz_dynamic_model/lstm.dynamic.h5"
  strip_seal "$runs/lstm/checkpoint.h5" "$seeds/corpus/fuzz_checkpoint/lstm-float.h5"
  strip_seal "$runs/mlp.cache.h5" "$seeds/corpus/fuzz_teacher_cache/mlp.cache.h5"
  # ONNX models: a float export of ours and the one PyTorch made (tests/onnx/fixtures/).
  mkdir -p "$seeds/corpus/fuzz_onnx_import"
  "$q" export "$runs/mlp/checkpoint.h5" -o "$seeds/corpus/fuzz_onnx_import/mlp.onnx" >/dev/null
  cp "$root/tests/onnx/fixtures/torch_cnn.onnx" "$seeds/corpus/fuzz_onnx_import/torch_cnn.onnx"
  touch "$seeds/done"
fi

# ------------------------------------------------------------------ runs
# Each harness works on its own copy of its seeds (libFuzzer adds the inputs that find new coverage).
# It stops at its first finding; it is then restarted for the time left, so that one bug does not end
# the campaign (at most 20 restarts: the same bug found again and again is not worth more).
logs="$build/fuzz-logs"
mkdir -p "$logs"
# With -detect_leaks=0 in FUZZ_FLAGS, LeakSanitizer must not run at exit either: it would report the
# leaks of all the inputs together, and libFuzzer would save that as a "crash" with an empty input.
leaks=1
if [[ " ${FUZZ_FLAGS:-} " == *" -detect_leaks=0 "* ]]; then leaks=0; fi
export ASAN_OPTIONS="print_stacktrace=1:detect_leaks=$leaks"
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/hdf5_leaks.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=1
summary=()
for h in "${harnesses[@]}"; do
  corpus="$build/fuzz-corpus/$h"
  crashes="$root/tests/fuzz/crashes/$h"
  mkdir -p "$corpus" "$crashes"
  if [[ -d "$seeds/corpus/$h" ]]; then cp -n "$seeds/corpus/$h"/* "$corpus"/ 2>/dev/null || true; fi
  before="$(ls "$crashes" | sort)"
  : >"$logs/$h.log"
  execs=0 start=$SECONDS restarts=0
  while ((SECONDS - start < seconds && restarts <= 20)); do
    left=$((seconds - (SECONDS - start)))
    "$build/tests/fuzz/$h" "$corpus" -max_total_time="$left" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$crashes/" ${FUZZ_FLAGS:-} >"$logs/$h.run.log" 2>&1 && status=0 || status=$?
    cat "$logs/$h.run.log" >>"$logs/$h.log"
    run_execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$h.run.log" | tail -1 | grep -o '[0-9]*$' || true)"
    execs=$((execs + ${run_execs:-0}))
    echo "---- fuzz.sh: run ended with status $status" >>"$logs/$h.log"
    ((status == 0)) && break
    restarts=$((restarts + 1))
  done
  new="$(comm -13 <(echo "$before") <(ls "$crashes" | sort) | grep -v '^$' || true)"
  n_timeouts=0 n_crashes=0
  for f in $new; do
    if [[ "$f" == timeout-* ]]; then n_timeouts=$((n_timeouts + 1)); else n_crashes=$((n_crashes + 1)); fi
  done
  line="$h: $execs executions in $((SECONDS - start)) s, $n_crashes crashes, $n_timeouts timeouts (log: $logs/$h.log)"
  for f in $new; do line+=$'\n'"    tests/fuzz/crashes/$h/$f"; done
  echo "$line"
  summary+=("$line")
  rmdir "$crashes" 2>/dev/null || true  # no findings: leave no empty folder
done
printf '%s\n' "${summary[@]}" >"$logs/summary"
echo "summary: $logs/summary"
