// bench_train.h: `qatlab bench --train MODEL`: the cost of a training step, float and QAT, measured on
// random data: images per second, share of the float peak, and a per-layer table of where the time goes.
#pragma once

#include <cstdint>
#include <string>

#include "nn/zoo.h"

namespace qatlab {

struct BenchTrainOptions {
  std::string model = "resnet20";
  ModelSpec spec{3, 32, 32, 10};
  int64_t batch = 128;
  int steps = 10;          // timed steps per variant (the median is reported), after 3 untimed ones
  bool layers = true;      // print the per-layer tables
  int threads = 1;         // in use (for the printout; set by the caller)
};

// Prints the report to stdout; throws std::invalid_argument on an unknown model.
void run_bench_train(const BenchTrainOptions& options);

}  // namespace qatlab
