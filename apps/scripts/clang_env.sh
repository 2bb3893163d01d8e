# clang_env.sh: sourced by the scripts whose builds use clang (test_sanitize.sh, fuzz.sh), never run.
# ensure_clang NAME FLAGS...: makes sure clang++ can link a program with FLAGS (sanitizers, libFuzzer,
# OpenMP), installing clang, its sanitizer runtimes and libomp when it cannot (as root), or saying what to
# install and returning 1. NAME prefixes the messages.
# The ordinary build (build.sh, install_deps.sh) stays with gcc; Debian's C++ machines come with these
# packages, so the install is usually skipped.
ensure_clang() {
  local name="$1"
  shift
  local flags=("$@")
  local packages="clang libclang-rt-dev libomp-dev"
  # libFuzzer brings its own main(): a harness defines only the entry point.
  local program='int main() { return 0; }'
  if [[ " ${flags[*]} " == *"fuzzer,"* || " ${flags[*]} " == *"=fuzzer "* ]]; then
    program='extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }'
  fi
  clang_links() {
    command -v clang++ >/dev/null && command -v clang >/dev/null &&
      echo "$program" | clang++ -x c++ "${flags[@]}" - -o /dev/null 2>/dev/null
  }
  clang_links && return 0
  if [[ "$(id -u)" != 0 ]]; then
    echo "$name: clang cannot link with ${flags[*]}; as root run: apt-get update && apt-get install -y $packages" >&2
    return 1
  fi
  echo "$name: installing clang (sanitizers, libFuzzer, OpenMP): apt-get install $packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  clang_links || { echo "$name: clang still cannot link with ${flags[*]}" >&2; return 1; }
}
