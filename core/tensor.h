// tensor.h: the float32 N-d tensor every layer computes with, and the hooks reverse-mode autograd hangs on.
//
// A Tensor is a handle. Copying a Tensor is SHALLOW: the copy shares the data buffer, the gradient
// buffer and the autograd history with the original (like a shared_ptr). Use clone() for a deep copy
// of the values, detach() for a handle on the same values without history.
//
// Storage is always contiguous, row-major, 64-byte aligned. Shapes use int64_t.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace qatlab {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "(64, 1, 28, 28)"

// A 64-byte aligned float buffer shared between tensor handles.
std::shared_ptr<float[]> alloc_floats(int64_t n);

struct Node;

// What a Tensor handle points to. Ops and autograd use it directly; user code goes through Tensor.
struct TensorImpl {
  Shape shape;
  int64_t numel = 0;
  std::shared_ptr<float[]> data;  // numel floats
  std::shared_ptr<float[]> grad;  // numel floats once a gradient has been accumulated, else null
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // the op that produced this tensor; null for leaves
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (defined() == false)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. empty() leaves the values uninitialised.
  static Tensor empty(const Shape& shape);
  static Tensor zeros(const Shape& shape);
  static Tensor ones(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);
  static Tensor scalar(float value) { return full({}, value); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the back
  int64_t numel() const;
  float* data();
  const float* data() const;
  float item() const;  // the single value of a one-element tensor
  std::vector<float> to_vector() const;

  // Autograd.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);  // only on leaves (tensors without grad_fn)
  bool is_leaf() const;
  bool has_grad() const;
  Tensor grad() const;          // shares the gradient buffer; undefined if none accumulated yet
  // The gradient buffer, allocated and zeroed on first use. const because a Tensor is a handle: the
  // gradient belongs to the shared TensorImpl, not to the handle (as with shared_ptr).
  float* mutable_grad() const;
  // For a backward that writes every element of this gradient: with no buffer yet, one is allocated
  // WITHOUT zeroing and *fresh is set: the caller must assign each element (g = v), which saves the
  // zero fill and a read per element; with a buffer, *fresh is cleared and the caller adds (g += v).
  float* grad_for_write(bool* fresh) const;
  void zero_grad() const;       // zero an existing gradient buffer (keeps it allocated)
  void backward();              // this must hold one element; seeds its gradient with 1
  void backward(const Tensor& seed);  // seed has this tensor's shape

  Tensor detach() const;  // same values, no history, requires_grad false
  Tensor clone() const;   // deep copy of the values, no history
  void copy_from(const Tensor& src);  // values only; shapes must have equal numel
  void fill(float value);

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// ---------------------------------------------------------------------------------------------------
// Autograd.
//
// An op computes its output, then calls record_op() with the inputs and a closure that, given the
// output's gradient, ADDS (+=) each input's gradient into input.mutable_grad(). Gradients accumulate;
// zeroing them is the optimizer's explicit step. record_op does nothing when grad mode is off or no
// input requires a gradient.

using BackwardFn = std::function<void(const Tensor& grad_out)>;

struct Node {
  const char* name = "";
  const std::string* scope = nullptr;  // the module it ran in, while a profiler is active (profiler.h)
  std::vector<Tensor> inputs;  // the inputs that require a gradient, for the topological walk
  BackwardFn backward;
};

void record_op(Tensor& out, const char* name, std::initializer_list<Tensor> inputs, BackwardFn fn);
void record_op(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn);

// True while gradients are recorded (the default). NoGradGuard switches recording off in its scope,
// for evaluation and for in-place parameter updates.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Throws std::invalid_argument(what); QATLAB_CHECK below calls it when a check fails.
[[noreturn]] void throw_invalid_argument(const std::string& what);

}  // namespace qatlab

// QATLAB_CHECK(condition, message): throws std::invalid_argument(message) when the condition is false.
// A macro so that the message, usually built from shapes and values, is formatted only on failure:
// these checks sit on every op call and every integer-kernel call.
#define QATLAB_CHECK(condition, message)                                 \
  do {                                                                    \
    if (!(condition)) ::qatlab::throw_invalid_argument(message);          \
  } while (0)

namespace qatlab {

}  // namespace qatlab
