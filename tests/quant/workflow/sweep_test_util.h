// sweep_test_util.h: a sweep cell's result made up for the tests of the sweep's tables and plots.
#pragma once

#include <cstdint>
#include <string>

#include "quant/workflow/sweep.h"

namespace qatlab::testing {

// A per-tensor cell at W/A bits and `seed` with integer accuracy `acc` (0..1), the simulation 0.001 above,
// top-1 agreement 0.99, exact mode identical on every image and a file of 1000 * w bytes; failed (with a
// CSV/JSON-quoting error) unless `ok`.
inline CellResult made_up_result(const std::string& method, int w, int a, uint64_t seed, double acc, bool ok = true) {
  CellResult r;
  r.cell = {method, "per-tensor", {w, a}, seed};
  r.ok = ok;
  r.sim_accuracy = acc + 0.001;
  r.int_accuracy = acc;
  r.top1_agreement = 0.99;
  r.exact_identical = 1.0;
  r.int_file_bytes = 1000 * w;
  if (!ok) r.error = "loss is NaN, \"diverged\"";
  return r;
}

// A LeNet-5 / MNIST sweep of LSQ and min/max PTQ at W8A8, W4A4, W2A2 over two seeds (two float models at
// 99 and 98 %): LSQ at 96 and 95 %, PTQ falling from 90 to 60 % with W2A2's second seed failed.
inline SweepReport made_up_report() {
  SweepReport rep;
  rep.model = "lenet5";
  rep.dataset = "mnist";
  rep.floats = {{1, "f1.h5", 0.99, 10000}, {2, "f2.h5", 0.98, 10000}};
  for (int b : {8, 4, 2})
    for (uint64_t seed : {1, 2}) {
      rep.cells.push_back(made_up_result("lsq", b, b, seed, 0.97 - 0.01 * seed));
      rep.cells.push_back(made_up_result("ptq-minmax", b, b, seed, 0.9 - 0.1 * (8 - b) / 2, !(b == 2 && seed == 2)));
    }
  rep.rows = summarize(rep.cells);
  return rep;
}

}  // namespace qatlab::testing
