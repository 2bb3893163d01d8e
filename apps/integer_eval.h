// integer_eval.h: test-set accuracy of an integer graph and, given its QAT model, how the two agree.
#pragma once

#include "apps/train_loop.h"
#include "quant/int8_graph.h"

namespace qatlab {

struct Agreement {
  int64_t elements = 0, differing = 0, max_lsb = 0, images = 0, same_top1 = 0;
  int64_t exact_identical_images = 0;  // images whose output codes equal the exact-mode simulation's
};

// Runs the integer graph over the loader (r: accuracy, count, predictions, seconds of integer compute);
// with `sim`, also the QAT model in float simulation and in exact mode (its conv and linear layers on the
// kernels of `path` too), comparing output codes (a).
// The kernels named by a --kernel option ("auto": the best this CPU has). UsageError for an unknown
// name or one this CPU cannot run.
KernelPath kernel_option(const std::string& value);

void run_integer(const Int8Graph& graph, KernelPath path, DataLoader& loader, Module* sim, EvalResult& r, Agreement& a);

}  // namespace qatlab
