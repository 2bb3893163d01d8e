// fuzz_image.cpp: decode_image (data/image_codec.h) on arbitrary bytes: PNG through libpng, JPEG through
// libjpeg (the first bytes choose), with their error and warning handlers turned into exceptions.
#include "fuzz_util.h"

#include "data/image_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const qatlab::Image img = qatlab::decode_image("input", bytes);
    // What decode_image promises of an image it returns.
    if ((img.c != 1 && img.c != 3) || img.h < 1 || img.w < 1 || img.h > qatlab::kMaxImageSide ||
        img.w > qatlab::kMaxImageSide || img.pixels.size() != static_cast<size_t>(img.c * img.h * img.w))
      __builtin_trap();
  } catch (const std::exception&) {
    // a refused file: the documented outcome
  }
  return 0;
}
