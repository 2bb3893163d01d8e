// kernel_path.cpp: which integer kernel paths this CPU runs (from core/cpu_features.h), their names and
// parsing, and the add dispatcher (see kernel_path.h).
#include "quant/engine/kernels/kernel_path.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/cpu_features.h"
#include "quant/engine/int8_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define QATLAB_X86 1
#else
#define QATLAB_X86 0
#endif

namespace qatlab {

void require_supported(KernelPath path) {
  if (!kernel_path_supported(path))
    throw std::invalid_argument(std::string("kernel path ") + kernel_path_name(path) +
                                " is not supported by this CPU (best available: " +
                                kernel_path_name(best_kernel_path()) + ")");
}

bool kernel_path_supported(KernelPath path) {
  switch (path) {
    case KernelPath::Reference:
    case KernelPath::Portable: return true;
    case KernelPath::Avx2: return cpu_has(CpuFeature::Avx2Fma);
    case KernelPath::Avx512Vnni: return cpu_has(CpuFeature::Avx512Vnni);
  }
  return false;
}

KernelPath best_kernel_path() {
  if (kernel_path_supported(KernelPath::Avx512Vnni)) return KernelPath::Avx512Vnni;
  if (kernel_path_supported(KernelPath::Avx2)) return KernelPath::Avx2;
  return KernelPath::Portable;
}

const char* kernel_path_name(KernelPath path) {
  switch (path) {
    case KernelPath::Reference: return "reference";
    case KernelPath::Portable: return "portable";
    case KernelPath::Avx2: return "avx2";
    case KernelPath::Avx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

KernelPath parse_kernel_path(const std::string& name) {
  if (name == "auto") return best_kernel_path();
  for (KernelPath p : {KernelPath::Reference, KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
    if (name == kernel_path_name(p)) {
      require_supported(p);
      return p;
    }
  }
  throw std::invalid_argument("unknown kernel path '" + name +
                              "': expected auto, reference, portable, avx2 or avx512vnni");
}

void add_int8(const AddInt8Params& params, const int8_t* a, const int8_t* b, int8_t* out, int64_t count,
              KernelPath path) {
  require_supported(path);
#if QATLAB_X86
  if (path == KernelPath::Avx512Vnni) return add_int8_avx512(params, a, b, out, count);
  if (path == KernelPath::Avx2) return add_int8_avx2(params, a, b, out, count);
#endif
  add_int8_reference(params, a, b, out, count);
}

namespace {

// add_int8_values_reference's tiles with the codes added by `add`.
template <class Add>
bool add_values_in_tiles(const AddInt8Params& p, const AddValueGrids& g, const float* a, const float* b, float* out,
                         int64_t count, Add add) {
  constexpr int64_t kTile = 2048;
  int8_t ca[kTile], cb[kTile], co[kTile];
  for (int64_t i = 0; i < count; i += kTile) {
    const int64_t len = std::min(kTile, count - i);
    if (find_first_nan(a + i, len) >= 0 || find_first_nan(b + i, len) >= 0) return false;
    quantize_float_to_int8_values(a + i, ca, len, g.a_scale, -p.input1_offset, g.a_min, g.a_max);
    quantize_float_to_int8_values(b + i, cb, len, g.b_scale, -p.input2_offset, g.b_min, g.b_max);
    add(ca, cb, co, len);
    dequantize_int8_to_float(co, out + i, len, g.out_scale, p.output_offset);
  }
  return true;
}

}  // namespace

bool add_int8_values_reference(const AddInt8Params& params, const AddValueGrids& grids, const float* a, const float* b,
                               float* out, int64_t count) {
  return add_values_in_tiles(params, grids, a, b, out, count, [&](const int8_t* ca, const int8_t* cb, int8_t* co,
                                                                  int64_t n) { add_int8_reference(params, ca, cb, co, n); });
}

bool add_int8_values(const AddInt8Params& params, const AddValueGrids& grids, const float* a, const float* b,
                     float* out, int64_t count, KernelPath path) {
  require_supported(path);
#if QATLAB_X86
  if (path == KernelPath::Avx512Vnni) return add_int8_values_avx512(params, grids, a, b, out, count);
#endif
  return add_values_in_tiles(params, grids, a, b, out, count, [&](const int8_t* ca, const int8_t* cb, int8_t* co,
                                                                  int64_t n) { add_int8(params, ca, cb, co, n, path); });
}

}  // namespace qatlab
