// explain.h: one output value of one integer conv / fully connected op worked out step by step, with
// every intermediate number: float values -> codes -> int32 accumulator -> multiplier and shift ->
// output code, checked against what the integer graph itself computes. For teaching (`qatlab inspect
// --explain`) and for quant/README.md's worked example.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/int8_graph.h"

namespace qatlab {

// Where in the op's output to look: a conv output (channel, y, x), a fully connected output (channel
// only). A negative y or x means the middle of the output plane.
struct ExplainAt {
  int64_t channel = 0, y = -1, x = -1;
};

// The walk-through as text. `image` is one input (1, C, H, W); `op_name` an op of the graph (its QAT
// module name, e.g. "features.3"). Throws std::invalid_argument naming the valid layer names when
// op_name is not a conv / fully connected op, or naming the range when `at` is outside the output.
// The last line says whether the integer graph produced the same code (it must: the test suite checks).
std::string explain_output(const Int8Graph& graph, const std::string& op_name, const Tensor& image, ExplainAt at);

// The names of the ops explain_output can take, in graph order.
std::vector<std::string> explainable_ops(const Int8Graph& graph);

// The code the walk-through arrives at and the one the graph computed, for tests.
struct ExplainCheck {
  int32_t computed = 0, graph = 0;
};
ExplainCheck explain_check(const Int8Graph& graph, const std::string& op_name, const Tensor& image, ExplainAt at);

}  // namespace qatlab
