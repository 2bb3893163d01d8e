// explain.h: one output value of one integer op worked out step by step, with every intermediate
// number, checked against what the integer graph itself computes: a conv / fully connected op (codes ->
// int32 accumulator -> multiplier and shift -> output code), a residual add, average pooling (windowed
// or global) and one step of one unit of an integer LSTM; and the batch-norm folding of a conv / linear
// layer's output channel, checked against convert's integers. For teaching (`qatlab inspect --explain`)
// and for quant/README.md's worked example.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/int8_graph.h"

namespace qatlab {

class QatLayer;

// Where in the op's output to look: a conv, add or average pooling output (channel, y, x); a fully
// connected or global pooling output (channel only); an lstm output (channel = the hidden unit, y = the
// time step, x unused). A negative y or x means the middle of the output plane (lstm: the last step).
struct ExplainAt {
  int64_t channel = 0, y = -1, x = -1;
};

// One input image: floats (1, C, H, W) normalised as the loader makes them and, optionally, its raw bytes
// (C, H, W), which a graph with a pixel table reads instead (as `eval` does). Converts from a Tensor.
struct ExplainImage {
  ExplainImage(Tensor floats, const uint8_t* pixels = nullptr) : floats(std::move(floats)), pixels(pixels) {}
  Tensor floats;
  const uint8_t* pixels = nullptr;
};

// The walk-through as text. `image` is one input (1, C, H, W); `op_name` an op of the graph (its QAT
// module name, e.g. "features.3"). Throws std::invalid_argument naming the valid layer names when
// op_name is not an op explainable_ops lists, or naming the range when `at` is outside the output.
// The last line says whether the integer graph produced the same code (it must: the test suite checks).
// `terms`: how many terms of a sum (products of a conv / fully connected output, an lstm gate row's input
// and recurrent terms) to list; 0 lists them all.
std::string explain_output(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at,
                           int64_t terms = 8);

// The names of the ops explain_output can take, in graph order.
std::vector<std::string> explainable_ops(const Int8Graph& graph);

// The code the walk-through arrives at and the one the graph computed, for tests.
struct ExplainCheck {
  int32_t computed = 0, graph = 0;
};
ExplainCheck explain_check(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at);

// The batch-norm folding of output channel `channel` of a conv / linear QAT layer with BatchNorm, with
// its real numbers: W, gamma, sigma = sqrt(running_var + eps), beta, the running mean, the folded weight
// and bias, their codes and the int32 bias, each checked against `lowered` (the integer layer convert made
// of it). `terms` folded weights are listed (0: all of the channel's); all are checked. Throws
// std::invalid_argument for a layer without BN or a channel out of range.
std::string explain_bn_folding(const QatLayer& layer, const LoweredLayer& lowered, int64_t channel, int64_t terms = 8);

// What the folding arrives at against convert's integers, for tests.
struct BnFoldCheck {
  int64_t weights = 0, weights_equal = 0;  // of the channel; equal to convert's codes
  int32_t bias = 0, lowered_bias = 0;
};
BnFoldCheck bn_folding_check(const QatLayer& layer, const LoweredLayer& lowered, int64_t channel);

}  // namespace qatlab
