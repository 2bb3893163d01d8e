// anomaly.h: finding the op where a diverging run's first NaN or infinity appears.
//
// A run that diverges shows it late: the loss, or a quantizer's scale, is found non-finite after the
// optimizer step has spread one bad gradient over every parameter. With detection on, every op recorded
// for autograd checks its output when it runs, and the backward walk checks the gradients each op hands
// to its inputs; the first non-finite value throws AnomalyError naming the op, the module it ran in (when
// a profiler that names the modules is active on the thread, profiler.h; `train --detect-anomaly` opens
// one) and where in the tensor. A check reads every value it checks, so a run is slower with it on: it
// is for finding a fault, not for every run. Off, the cost is one atomic load an op.
#pragma once

#include <stdexcept>
#include <string>

namespace qatlab {

class Tensor;
struct Node;

class AnomalyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whether detection is on (process-wide: ops run their parts on worker threads).
bool anomaly_detection();

// Turns detection on for its lifetime (nested guards restore what was before).
class AnomalyDetection {
 public:
  AnomalyDetection();
  ~AnomalyDetection();
  AnomalyDetection(const AnomalyDetection&) = delete;
  AnomalyDetection& operator=(const AnomalyDetection&) = delete;

 private:
  bool previous_;
};

// The checks record_op and Tensor::backward make while detection is on. `scope` is the module's name
// ("" or null: none known).
void check_op_output(const Tensor& out, const char* op, const std::string* scope);
// After node's backward: the gradient of each input it holds. grad_out is the gradient the node was given.
void check_op_gradients(const Node& node, const Tensor& grad_out);

}  // namespace qatlab
