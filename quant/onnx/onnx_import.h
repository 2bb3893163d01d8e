// onnx_import.h: a float ONNX model (a network trained elsewhere, or one `qatlab export` wrote) as a qatlab
// network description (nn/model_description.h) and the parameters of the model it builds.
//
// The ONNX graph is a DAG; a description is a list of layers with residual blocks. The importer walks the
// graph from its input to its output: a tensor read by one node continues the list, a tensor read by two
// nodes opens a residual block whose branches must meet again at an Add (body and shortcut), and a Relu
// right after that Add is the block's own. Each ONNX op has one handler that maps it to layers
// (quant/onnx/README.md has the table, and what is refused). Input: the graph's one input, float
// (N, C, H, W); the model's classes: the width of its one output.
#pragma once

#include <string>
#include <vector>

#include "nn/model_description.h"
#include "nn/module.h"
#include "nn/zoo.h"

namespace qatlab {

// A model that cannot be imported: one line saying which node (op type and name) and what is wrong.
class OnnxImportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OnnxImport {
  ModelDescription description;       // "qatlab-model: 1", a comment per layer naming its ONNX node
  ModelSpec spec;                     // input (C, H, W) from the graph input, classes from the output
  NamedTensors state;                 // every parameter and buffer, by the names the built model uses
  int64_t nodes = 0;                  // ONNX nodes read
  std::vector<std::string> op_types;  // the distinct ONNX op types, in first-use order
};

// The serialized model `bytes` (ModelProto), checked with onnx::checker::check_model first. `name` is the
// network's name (sanitized to what descriptions allow); `source` names the model in the description's
// comments. Throws OnnxImportError: not an ONNX model, the checker's complaint, an unsupported op (its
// type and node), shapes that do not fit, a graph that is not layers and residual blocks.
OnnxImport import_onnx_model(const std::string& bytes, const std::string& name, const std::string& source);

// import_onnx_model of the file at `path`; messages start with the path.
OnnxImport import_onnx_file(const std::string& path, const std::string& name);

// The model an import describes, built and loaded with its parameters (in eval mode).
ModulePtr imported_model(const OnnxImport& imported);

}  // namespace qatlab
