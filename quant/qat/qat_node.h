// qat_node.h: what a module of a QAT model says about itself, so that one walk (walk.h) serves convert,
// inspect and the mode switches: how it lowers into integer ops, how it describes itself (its quantizers,
// grids and integer constants), how it runs while a recording watches its outputs, and its exact mode.
//
// A new QAT layer derives from QatNode, implements these in its own file, and gives prepare_qat a rule
// that builds it from its float module (prepare_rules.h). Neither the walk nor convert nor inspect changes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "quant/engine/kernels/kernel_path.h"

namespace qatlab {

class Description;
class Lowering;
class Quantizer;
class Recording;

class QatNode : public Module {
 public:
  using Module::Module;

  // Appends this module's integer ops to the graph, reading the walk's current activation (its slot and
  // grid), and leaves the walk at the module's output. Throws std::invalid_argument when the module has
  // no integer form with these grids.
  virtual void lower(Lowering& walk, const std::string& name) const = 0;
  // Adds this module's entries to the description (Description::row / keep), the walk's grid as its input,
  // and leaves the walk at the module's output (inspect's rows and drawing; Module::describe() stays the
  // one line of settings). A module the description cannot follow throws
  // std::invalid_argument naming it.
  virtual void describe_node(Description& walk, const std::string& name) const = 0;
  // Runs as forward does, handing the outputs of the rows describe_node() lists to the recording. By default a
  // module with no rows of its own: forward.
  virtual Tensor record(Recording& walk, const std::string& name, const Tensor& x) { return forward(x); }

  // Exact mode: evaluation computes on the integer codes with the graph's arithmetic (set_exact_mode).
  virtual void set_exact(bool on, KernelPath path = KernelPath::Reference) = 0;
  // The observers the module keeps itself, besides its quantizers' (set_observers_enabled).
  virtual void enable_own_observers(bool on) {}
  // The grids the module reads without holding them as children (its input's, a sum's summands'), so that
  // code swapping quantizers in the tree can swap these too.
  virtual std::vector<std::shared_ptr<Quantizer>*> grid_links() { return {}; }
};

}  // namespace qatlab
