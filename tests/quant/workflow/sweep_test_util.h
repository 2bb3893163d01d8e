// sweep_test_util.h: a sweep cell's result made up for the tests of the sweep's tables and plots.
#pragma once

#include <cstdint>
#include <string>

#include "quant/workflow/sweep.h"

namespace qatlab::testing {

// A per-tensor cell at W/A bits and `seed` with integer accuracy `acc` (0..1), the simulation 0.001 above,
// top-1 agreement 0.99 and a file of 1000 * w bytes; failed (with a CSV/JSON-quoting error) unless `ok`.
inline CellResult made_up_result(const std::string& method, int w, int a, uint64_t seed, double acc, bool ok = true) {
  CellResult r;
  r.cell = {method, "per-tensor", {w, a}, seed};
  r.ok = ok;
  r.sim_accuracy = acc + 0.001;
  r.int_accuracy = acc;
  r.top1_agreement = 0.99;
  r.int_file_bytes = 1000 * w;
  if (!ok) r.error = "loss is NaN, \"diverged\"";
  return r;
}

}  // namespace qatlab::testing
