// fuzz_teacher_cache.cpp: TeacherCache (nn/train/teacher_cache.h) on arbitrary HDF5 content behind a valid
// seal: the header (the key a file states, its logits' shape), then the whole file loaded for the key it
// states, so that mutations get past the key check to the logits, and every variant of its first and last
// image looked up.
#include "fuzz_util.h"

#include <vector>

#include "nn/train/teacher_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::string path = qatlab::fuzz::sealed_file("cache.h5", data, size);
    const auto [key, shape] = qatlab::TeacherCache::read_header(path);
    (void)qatlab::TeacherCache::up_to_date(path, key);
    const qatlab::TeacherCache cache = qatlab::TeacherCache::load(path, key);
    std::vector<qatlab::SampleOrigin> origins;
    const auto p = static_cast<int32_t>(key.crop_pad);  // read_header holds it to 0..64
    for (const int64_t sample : {int64_t{0}, key.samples - 1})
      for (int32_t oy = -p; oy <= p; ++oy)
        for (int32_t ox = -p; ox <= p; ++ox)
          for (const bool flip : {false, true})
            if (!flip || key.hflip) origins.push_back({sample, oy, ox, flip, false});
    (void)cache.rows(origins);
  } catch (const std::exception&) {
  }
  return 0;
}
