// ptq_dynamic.h: `qatlab ptq --dynamic FLOAT_CHECKPOINT`: dynamic quantization of a float model's Linear
// and LSTM layers (int8 weights, activations quantized per batch at run time), compared with the float
// model: weight and file sizes, test accuracy, latency, and how far the outputs move.
#pragma once

namespace qatlab {

// argv[0] is the subcommand's name ("ptq"); "--dynamic" is accepted and ignored among the options.
int cmd_ptq_dynamic(int argc, char** argv);

}  // namespace qatlab
