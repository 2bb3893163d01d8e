// cpu_features.cpp: CPU feature tests (GCC/Clang's cpuid builtins on x86; nothing elsewhere) and the
// active float path.
#include "core/cpu_features.h"

#include <atomic>
#include <stdexcept>
#include <string>

namespace qatlab {

bool cpu_has(CpuFeature feature) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  switch (feature) {
    case CpuFeature::Avx2Fma: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuFeature::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    case CpuFeature::Avx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
  }
#endif
  (void)feature;
  return false;
}

bool float_path_supported(FloatPath path) {
  switch (path) {
    case FloatPath::Portable: return true;
    case FloatPath::Avx2: return cpu_has(CpuFeature::Avx2Fma);
    case FloatPath::Avx512: return cpu_has(CpuFeature::Avx512);
  }
  return false;
}

FloatPath best_float_path() {
  if (float_path_supported(FloatPath::Avx512)) return FloatPath::Avx512;
  if (float_path_supported(FloatPath::Avx2)) return FloatPath::Avx2;
  return FloatPath::Portable;
}

const char* float_path_name(FloatPath path) {
  switch (path) {
    case FloatPath::Portable: return "portable";
    case FloatPath::Avx2: return "avx2";
    case FloatPath::Avx512: return "avx512";
  }
  return "unknown";
}

namespace {
std::atomic<int>& active_path_slot() {
  static std::atomic<int> slot{static_cast<int>(best_float_path())};
  return slot;
}
}  // namespace

FloatPath active_float_path() { return static_cast<FloatPath>(active_path_slot().load(std::memory_order_relaxed)); }

void set_float_path(FloatPath path) {
  if (!float_path_supported(path))
    throw std::invalid_argument(std::string("float path ") + float_path_name(path) +
                                " is not supported by this CPU (best available: " +
                                float_path_name(best_float_path()) + ")");
  active_path_slot().store(static_cast<int>(path), std::memory_order_relaxed);
}

}  // namespace qatlab
