#!/usr/bin/env bash
# test_sanitize.sh [TEST_TARGET ...]: builds qatlab and test suites with clang's AddressSanitizer and
# UndefinedBehaviorSanitizer (-DQATLAB_SANITIZE=ON, RelWithDebInfo at -O0) into build-sanitize/ and runs
# them; any sanitizer report fails the run. Without arguments: the suites tests/README.md lists.
# Installs clang first when it is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build-sanitize"
jobs="$(nproc 2>/dev/null || echo 2)"
# Where a sanitizer finds what the ordinary run cannot: the file readers (HDF5 checkpoints and models,
# IDX, CIFAR-10, model descriptions, HDF5 datasets, PNG / JPEG images through libpng / libjpeg, a sweep's
# results.json), the integer graph and its kernels, the float kernels, prepare and convert, the ONNX
# importer, and the CLI on bad input (which runs the sanitized qatlab binary). The whole suite takes too
# long sanitized for CI.
suites=(core_test_h5io core_test_file_seal core_test_atomic_file
        core_test_ops_conv core_test_gemm core_test_ops_norm quant_test_qat_fusion
        data_test_idx data_test_cifar10 data_test_dataset data_test_image_codec data_test_image_folder
        data_test_hdf5_dataset quant_test_sweep
        quant_test_int8_graph quant_test_int8_kernels quant_test_int8_gemm quant_test_int_lstm
        quant_test_requantize quant_test_packed_codes quant_test_prepare quant_test_convert
        quant_test_dynamic_quant quant_test_observer nn_test_model_description nn_test_metrics_csv nn_test_teacher_cache
        onnx_test_onnx_import
        apps_test_bad_input_cli apps_test_export_cli apps_test_import_cli apps_test_file_datasets_cli)
if (($# > 0)); then suites=("$@"); fi

# clang, not gcc: at -O0 with both sanitizers gcc takes about twice clang's time to compile the same
# file (nn/lstm.cpp: 14 s of CPU against 7 s), and this build is half of CI's time (tests/README.md).
source "$root/apps/scripts/clang_env.sh"
ensure_clang test_sanitize.sh -fsanitize=address,undefined -fopenmp || exit 1
# A build directory configured with another compiler cannot switch: start it afresh.
if [[ -f "$build/CMakeCache.txt" ]] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi

start=$SECONDS
# Only the chosen suites are configured (QATLAB_TESTS), so that one build runs them all in parallel.
# -O0 -g1: line tables for the reports' stacks, and no optimisation (which could only remove checks); on
# the 2-core machine (gcc then) its build took 357 s where -O1's took 619 s, and the suites ran about as
# fast (93 s against 83 s; tests/README.md).
regex="^($(IFS='|'; echo "${suites[*]}"))\$"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O0 -g1" -DQATLAB_SANITIZE=ON -DQATLAB_TESTS="$regex" >/dev/null
cmake --build "$build" -j "$jobs"
built=$SECONDS

# Stop at the first report, with its stack: the suite then fails (non-zero exit, report on stderr).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# Except the leaks of the HDF5 library itself on damaged files, which qatlab cannot free (tests/README.md,
# "Fuzzing", finding 4); the CLI suite runs such files.
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/hdf5_leaks.supp:print_suppressions=0"
logs="$build/sanitize-logs"
rm -rf "$logs" && mkdir -p "$logs"
# Each suite in one process (sanitizer start-up is paid once), two at a time.
printf '%s\n' "${suites[@]}" | xargs -P "$jobs" -I{} sh -c \
  '"$0/tests/{}" --gtest_brief=1 > "$1/{}.log" 2>&1 && echo "ok     {}" || echo "FAILED {}"' "$build" "$logs" |
  tee "$logs/summary"
if grep -q '^FAILED' "$logs/summary"; then
  for t in $(sed -n 's/^FAILED //p' "$logs/summary"); do
    echo "---------- $t (full log: $logs/$t.log)"
    grep -E -A30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|\[  FAILED  \]' "$logs/$t.log" | head -60
  done
  echo "sanitizers: build $((built - start)) s, run $((SECONDS - built)) s"
  exit 1
fi
echo "sanitizers: ${#suites[@]} suites clean (build $((built - start)) s, run $((SECONDS - built)) s)"
