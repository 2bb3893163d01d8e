// conv_taps.cpp: which backend's shifted-tap kernels a float path runs (conv_taps.h).
#include "core/kernels/conv_taps.h"

#include <stdexcept>
#include <string>

namespace qatlab {

const TapConvKernels& tap_conv_kernels(FloatPath path) {
  if (!float_path_supported(path))
    throw std::invalid_argument(std::string("float path ") + float_path_name(path) + " is not supported by this CPU");
  switch (path) {
    case FloatPath::Avx512: return kTapConvAvx512;
    case FloatPath::Avx2: return kTapConvAvx2;
    case FloatPath::Portable: break;
  }
  return kTapConvPortable;
}

}  // namespace qatlab
