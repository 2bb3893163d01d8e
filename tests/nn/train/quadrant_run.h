// quadrant_run.h: a training run of the quadrant network (quadrant_data.h), for the tests that need
// trained networks of their own (teachers, students).
#pragma once

#include <cstdint>
#include <string>

#include "core/rng.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/train_run.h"

namespace qatlab::test {

// The quadrant network initialised from `seed`, trained on `data` for `epochs` epochs of SGD at lr 0.05
// in batches of 32, shuffled with `seed`; its files in `out` ("": none). `data` must outlive the run.
inline TrainRun quadrant_run(const DataBundle& data, uint64_t seed, int64_t epochs, const std::string& out = "") {
  TrainRun run;
  run.description = parse_model_description(kQuadrantNetwork, "the test's network");
  Rng rng(seed);
  run.model = build_model(run.description, data.spec, rng);
  run.settings.epochs = epochs;
  run.settings.batch_size = 32;
  run.settings.lr = 0.05f;
  run.settings.seed = seed;
  run.data = &data;
  run.out_dir = out;
  return run;
}

}  // namespace qatlab::test
